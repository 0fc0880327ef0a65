import { EC2Client } from '@aws-sdk/client-ec2';
import { EC2_CALL_LIMITS, type Ec2CallLimits } from './ec2-call-limits.js';

/**
 * An EC2 client whose calls end: the SDK's defaults wait for ever on an
 * endpoint that does not answer (and only warn past a request timeout
 * unless told to throw), which would hold a worker's step, or an agent's
 * start, with it. The SDK's own retries are off: hubshift backs off itself
 * (aws-retry.ts). `region` unset: the SDK's chain (AWS_REGION).
 */
export function ec2ClientFor(region?: string, limits: Ec2CallLimits = EC2_CALL_LIMITS): EC2Client {
  return new EC2Client({
    ...(region ? { region } : {}),
    maxAttempts: 1,
    requestHandler: { connectionTimeout: limits.connectMs, requestTimeout: limits.answerMs, throwOnRequestTimeout: true },
  });
}

import { EC2Client } from '@aws-sdk/client-ec2';

/** How long an EC2 call may take to connect and to answer, ms. */
export interface Ec2CallLimits {
  connectMs: number;
  answerMs: number;
}

/** EC2's API answers in seconds; CreateFleet's instant launches take the longest. */
export const EC2_CALL_LIMITS: Ec2CallLimits = { connectMs: 5_000, answerMs: 30_000 };

/** An agent's lookup at its start: one quick read, and the node starts on a default without it. */
export const EC2_LOOKUP_LIMITS: Ec2CallLimits = { connectMs: 3_000, answerMs: 10_000 };

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

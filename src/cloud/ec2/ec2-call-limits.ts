// Apart from ec2-client.ts so that what only names a limit (the CLI's options) does not load the AWS SDK, which
// took 0.65 s of every `hubshift` command's start.

/** How long an EC2 call may take to connect and to answer, ms. */
export interface Ec2CallLimits {
  connectMs: number;
  answerMs: number;
}

/** EC2's API answers in seconds; CreateFleet's instant launches take the longest. */
export const EC2_CALL_LIMITS: Ec2CallLimits = { connectMs: 5_000, answerMs: 30_000 };

/** An agent's lookup at its start: one quick read, and the node starts on a default without it. */
export const EC2_LOOKUP_LIMITS: Ec2CallLimits = { connectMs: 3_000, answerMs: 10_000 };

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request as EC2 would receive it: the query protocol's form fields and the signature header. */
export interface Ec2Request {
  action: string;
  params: Record<string, string>;
  authorization: string;
}

export interface Ec2Answer {
  status?: number;
  /** The response body: EC2's XML. */
  xml: string;
}

export type Ec2Handler = (params: Record<string, string>) => Ec2Answer;

const NS = 'http://ec2.amazonaws.com/doc/2016-11-15/';

/** A successful EC2 answer: <ActionResponse> with a request id, as the documentation shows them. */
export function ec2Response(action: string, inner: string): Ec2Answer {
  return { xml: `<?xml version="1.0" encoding="UTF-8"?>\n<${action}Response xmlns="${NS}"><requestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</requestId>${inner}</${action}Response>` };
}

/** EC2's error document (HTTP 4xx or 5xx). */
export function ec2Error(status: number, code: string, message: string): Ec2Answer {
  return { status, xml: `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>${code}</Code><Message>${message}</Message></Error></Errors><RequestID>ea966190-f9aa-478e-9ede-example</RequestID></Response>` };
}

/** The link as DescribeInstanceTypes gives it: the headline and the first card's baseline and peak, Gbit/s. */
export interface TypeNetwork {
  performance: string;
  baselineGbps: number;
  peakGbps: number;
}

/** One <item> of DescribeInstanceTypes' instanceTypeSet, in the shape of the EC2 API reference's example. */
export function instanceTypeItem(name: string, vcpus: number, mib: number, network: TypeNetwork = { performance: 'Up to 10 Gigabit', baselineGbps: 0.75, peakGbps: 10 }): string {
  return (
    `<item><instanceType>${name}</instanceType><currentGeneration>true</currentGeneration><supportedUsageClasses><item>on-demand</item><item>spot</item></supportedUsageClasses>` +
    `<processorInfo><supportedArchitectures><item>x86_64</item></supportedArchitectures><sustainedClockSpeedInGhz>3.1</sustainedClockSpeedInGhz></processorInfo>` +
    `<vCpuInfo><defaultVCpus>${vcpus}</defaultVCpus><defaultCores>${vcpus / 2}</defaultCores><defaultThreadsPerCore>2</defaultThreadsPerCore></vCpuInfo>` +
    `<memoryInfo><sizeInMiB>${mib}</sizeInMiB></memoryInfo>` +
    `<networkInfo><networkPerformance>${network.performance}</networkPerformance><maximumNetworkInterfaces>3</maximumNetworkInterfaces><networkCards><item><networkCardIndex>0</networkCardIndex>` +
    `<baselineBandwidthInGbps>${network.baselineGbps}</baselineBandwidthInGbps><peakBandwidthInGbps>${network.peakGbps}</peakBandwidthInGbps></item></networkCards></networkInfo></item>`
  );
}

/**
 * A loopback endpoint that speaks EC2's query protocol (form-encoded POST,
 * XML answers), so the real SDK client's request shapes can be checked and
 * its parser fed AWS's documented answers. Each action answers from a queue
 * of handlers; the last one repeats.
 */
export class Ec2QueryEndpoint {
  readonly requests: Ec2Request[] = [];
  private readonly handlers = new Map<string, Ec2Handler[]>();
  private server: Server | undefined;
  url = '';

  on(action: string, ...handlers: Ec2Handler[]): this {
    this.handlers.set(action, [...(this.handlers.get(action) ?? []), ...handlers]);
    return this;
  }

  /** Drops what was queued for an action and queues these instead. */
  replace(action: string, ...handlers: Ec2Handler[]): this {
    this.handlers.delete(action);
    return this.on(action, ...handlers);
  }

  calls(action: string): Record<string, string>[] {
    return this.requests.filter((r) => r.action === action).map((r) => r.params);
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const params = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
        const action = params.Action ?? '';
        this.requests.push({ action, params, authorization: String(req.headers.authorization ?? '') });
        const queue = this.handlers.get(action) ?? [];
        const handler = queue.length > 1 ? queue.shift()! : queue[0];
        const answer = handler ? handler(params) : ec2Error(400, 'InvalidAction', `The action ${action} is not valid for this web service.`);
        res.writeHead(answer.status ?? 200, { 'content-type': 'text/xml;charset=UTF-8' });
        res.end(answer.xml);
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

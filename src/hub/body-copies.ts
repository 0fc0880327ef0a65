import type { Readable } from 'node:stream';

/**
 * A copy of a request's body as it streams through, so that a request the
 * session never took (it waited in the server's listen queue when a
 * checkpoint or move left it out) can be sent again whatever its method.
 * Bounded per request and over all of them: past either bound the copy is
 * given up, and the request is passed on as before, once.
 */
export class BodyCopy {
  private readonly chunks: Buffer[] = [];
  private bytes = 0;
  private given = false;
  private readonly ended: Promise<boolean>;

  constructor(
    private readonly body: Readable,
    private readonly bounds: BodyCopies,
  ) {
    body.on('data', (chunk: Buffer) => this.take(chunk));
    this.ended = new Promise((resolve) => {
      body.once('end', () => resolve(true));
      // A client gone before its body's end: nothing whole to send again.
      body.once('close', () => resolve(false));
      body.once('error', () => resolve(false));
    });
  }

  private take(chunk: Buffer): void {
    if (this.given) return;
    if (this.bytes + chunk.length > this.bounds.perRequest || !this.bounds.reserve(chunk.length)) {
      this.release();
      return;
    }
    this.chunks.push(chunk);
    this.bytes += chunk.length;
  }

  /** The whole body once the client has sent it all, or null where the copy was given up. */
  async whole(): Promise<Buffer | null> {
    if (this.given) return null;
    // The pipe to the failed upstream no longer draws the body: the copy does.
    this.body.resume();
    const ended = await this.ended;
    return ended && !this.given ? Buffer.concat(this.chunks) : null;
  }

  /** Gives the copy up and its bytes back to the bound over all requests. */
  release(): void {
    if (this.given) return;
    this.given = true;
    this.bounds.free(this.bytes);
    this.chunks.length = 0;
    this.bytes = 0;
  }
}

/** Where the gateway's body copies are made, and the bounds they share. */
export class BodyCopies {
  private used = 0;

  constructor(
    readonly perRequest: number,
    private readonly total: number,
  ) {}

  copy(body: Readable): BodyCopy {
    return new BodyCopy(body, this);
  }

  /** Takes `n` bytes of the shared bound, if they are left. */
  reserve(n: number): boolean {
    if (this.used + n > this.total) return false;
    this.used += n;
    return true;
  }

  free(n: number): void {
    this.used -= n;
  }

  /** Bytes held by copies right now. */
  get held(): number {
    return this.used;
  }
}

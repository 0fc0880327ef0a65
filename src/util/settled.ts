type Values<T extends readonly unknown[]> = { -readonly [K in keyof T]: Awaited<T[K]> };

/**
 * Promise.all that waits for every promise to settle before it throws the
 * first failure (in the given order): nothing the caller started is still
 * running when it cleans up after that failure.
 */
export async function allSettledOrThrow<T extends readonly unknown[] | []>(promises: T): Promise<Values<T>> {
  const settled = await Promise.allSettled(promises as readonly unknown[]);
  const values: unknown[] = [];
  for (const r of settled) {
    if (r.status === 'rejected') throw r.reason;
    values.push(r.value);
  }
  return values as Values<T>;
}

import { readdir, readFile } from 'node:fs/promises';
import { basename, extname, join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { z } from 'zod';
import { InputError, describeZodIssue } from '../core/errors.js';
import { DEFAULT_GUARDS, Guards, Policy, type PolicySet } from './policy-schema.js';

function describeIssue(file: string, doc: number, err: z.ZodError): string {
  return `${file}${doc > 0 ? ` (document ${doc + 1})` : ''}: ${describeZodIssue(err, '(document)')}`;
}

/** Parses one policy file's text: one or more YAML documents, each a policy or the guards. */
export function parsePolicyFile(file: string, text: string): { policies: Policy[]; guards: Guards | null } {
  const docs = parseAllDocuments(text);
  const policies: Policy[] = [];
  let guards: Guards | null = null;
  docs.forEach((doc, n) => {
    if (doc.errors.length) throw new InputError(`${file}: not valid YAML: ${doc.errors[0]?.message}`);
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) return;
    if (typeof value === 'object' && (value as { kind?: unknown }).kind === 'guards') {
      const g = Guards.safeParse(value);
      if (!g.success) throw new InputError(describeIssue(file, n, g.error));
      if (guards) throw new InputError(`${file}: more than one guards document`);
      guards = g.data;
      return;
    }
    const p = Policy.safeParse(value);
    if (!p.success) throw new InputError(describeIssue(file, n, p.error));
    const fallback = docs.length > 1 ? `${basename(file, extname(file))}-${n + 1}` : basename(file, extname(file));
    policies.push({ ...p.data, name: p.data.name ?? fallback });
  });
  return { policies, guards };
}

/** Reads every *.yaml / *.yml in a directory into one policy set; throws InputError naming the file and field. */
export async function loadPolicyDir(dir: string): Promise<PolicySet> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => /\.ya?ml$/.test(n)).sort();
  } catch {
    throw new InputError(`cannot read the policies directory ${dir}`);
  }
  const policies: Policy[] = [];
  let guards: Guards | null = null;
  for (const n of names) {
    const parsed = parsePolicyFile(n, await readFile(join(dir, n), 'utf8'));
    policies.push(...parsed.policies);
    if (parsed.guards) {
      if (guards) throw new InputError(`${n}: guards are already set in another file`);
      guards = parsed.guards;
    }
  }
  const seen = new Set<string>();
  for (const p of policies) {
    if (seen.has(p.name)) throw new InputError(`two policies are named ${p.name} in ${dir}`);
    seen.add(p.name);
  }
  return { policies, guards: guards ?? DEFAULT_GUARDS };
}

/**
 * The policies in force. A reload that fails validation never replaces the
 * last good set: the error is returned and the old set stays.
 */
export class PolicyHolder {
  private current: PolicySet;
  constructor(
    private readonly dir: string,
    initial: PolicySet,
  ) {
    this.current = initial;
  }

  static async open(dir: string): Promise<PolicyHolder> {
    return new PolicyHolder(dir, await loadPolicyDir(dir));
  }

  get policies(): PolicySet {
    return this.current;
  }

  async reload(): Promise<{ ok: true } | { ok: false; error: string }> {
    try {
      this.current = await loadPolicyDir(this.dir);
      return { ok: true };
    } catch (err) {
      return { ok: false, error: (err as Error).message };
    }
  }
}

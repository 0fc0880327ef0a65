// Apart from local-provider.ts so that `hubshift local`'s options name them without loading the provider (and the
// agent's sandbox and criu code under it) for every command's start.
export const LOCAL_DEFAULTS = { stateDir: '/var/lib/hubshift/local', bridge: 'hsseg0', subnet: '10.230.0.0/16' } as const;

import { parseScenario } from './schema';
import { runScenario } from './run';

const scenario = (yaml: string) => parseScenario(yaml, 'test.yaml');

describe('LUO steps in scenarios: the schema', () => {
  it.each<[string, string, string]>([
    ['a repeated session without {i}', 'generations: [{ luo: { sessions: [{ name: s, repeat: 2 }] } }]', "generations[0].luo.sessions[0].name: a repeated session's name must hold {i}"],
    ['two sessions with one name', 'generations: [{ luo: { sessions: [{ name: s }, { name: s }] } }]', "generations[0].luo.sessions[1].name: session 's' is listed twice"],
    ['a token used twice in a session', 'generations: [{ luo: { sessions: [{ name: s, files: [{ token: 1 }, { token: 1 }] }] } }]', 'generations[0].luo.sessions[0].files: tokens must be unique in a session'],
    ['a token that is not a u64', 'generations: [{ luo: { sessions: [{ name: s, files: [{ token: "0x1ffffffffffffffff" }] }] } }]', 'generations[0].luo.sessions[0].files'],
    ['a name of 64 bytes', `generations: [{ luo: { sessions: [{ name: ${'x'.repeat(64)} }] } }]`, 'generations[0].luo.sessions[0].name: must be at most 63 bytes without NUL'],
    ['an errno the check cannot expect', 'generations: [{ luo: { checks: [{ do: open-twice, expect: EWHAT }] } }]', 'generations[0].luo.checks[0].expect'],
    ['an injection with no session to carry it', 'generations: [{ luo: { inject: { freeze: EIO } } }]', 'generations[0].luo.inject: inject needs a session to hold its test file'],
    ['an unknown step', 'generations: [{ luo: { checks: [{ do: reboot, expect: EIO }] } }]', 'generations[0].luo.checks[0].do'],
  ])('refuses %s', (_what, yaml, message) => {
    expect(() => scenario(yaml)).toThrow(message);
  });

  it('accepts a generation with only LUO steps (preserve defaults to nothing)', () => {
    const s = scenario('generations: [{ luo: { sessions: [{ name: "s{i}", repeat: 3, files: { count: 2, size: 8K } }] } }]');
    expect(s.generations[0].preserve).toEqual({});
    expect(s.generations[0].luo!.sessions[0]).toMatchObject({ repeat: 3, files: { count: 2, size: 8192, sparse: false } });
  });
});

describe('LUO steps in scenarios: the run', () => {
  it('hands sessions over and verifies every byte, sizes and seals in the next kernel', () => {
    const r = runScenario(
      scenario(`
machine: { ram: 1G }
generations:
  - luo:
      sessions:
        - name: vm
          files: [{ token: 1, size: 300K, sparse: true }, { token: "0xffffffffffffffff", size: 5000, seals: [write, seal] }]
        - { name: "empty-{i}", repeat: 3 }
  - {}
`),
    );
    expect(r.errors).toEqual([]);
    expect(r.generations[0].luo).toMatchObject({ sessions: 4, files: 2, bytes: 300 * 1024 + 5000 });
    expect(r.generations[0].luoVerifiedByNext).toMatchObject({ sessions: 4, files: 2, verified: true });
    expect(r.ok).toBe(true);
  });

  it('a check whose errno differs from upstream\'s is an error naming the step', () => {
    const r = runScenario(scenario('generations: [{ luo: { sessions: [{ name: s }], checks: [{ do: create-session, name: s, expect: EBUSY }] } }]'));
    expect(r.errors).toEqual(["generation 1: CREATE_SESSION 's' gave EEXIST (wanted EBUSY)"]);
    expect(r.ok).toBe(false);
  });

  it('an injected freeze failure refuses the kexec, LUO unfreezes, and the retried kexec hands everything over', () => {
    const r = runScenario(scenario('generations: [{ luo: { sessions: [{ name: s, files: [{ token: 1 }] }], inject: { freeze: ENOMEM } } }, {}]'));
    expect(r.errors).toEqual([]);
    expect(r.generations[0].luo!.refusedKexec).toBe("ENOMEM: live update prepare failed in plugin 'liveupdate': ENOMEM: test-file freeze told to fail");
    expect(r.generations[0].luoVerifiedByNext!.verified).toBe(true);
  });

  it('an injected retrieve failure fails that file only; the session\'s memfds still come back', () => {
    const r = runScenario(scenario('generations: [{ luo: { sessions: [{ name: s, files: [{ token: 1 }, { token: 2 }] }], inject: { retrieve: EIO } } }]'));
    expect(r.errors).toEqual([]);
    expect(r.generations[0].luoVerifiedByNext).toMatchObject({ files: 2, verified: true, checks: ["RETRIEVE_FD 's' token 0xfa17 (injected to fail) → EIO"] });
  });
});

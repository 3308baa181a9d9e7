/**
 * The Falco output fields the daemon reads. Rules tagged `t1612_build` / `t1612_egress` must
 * put these in their `output` (as `key=%key` pairs) so they arrive in `output_fields`; the
 * rules checker enforces the REQUIRED sets. Any of them may still be missing or `<NA>` at run
 * time, and the daemon copes.
 */

/** How many ancestors rules report: proc.aname[2..N] / proc.apid[2..N] ([1] is pname/ppid). */
export const ANCESTRY_DEPTH = 6;

const ancestry = (prefix: 'proc.aname' | 'proc.apid'): string[] =>
  Array.from({ length: ANCESTRY_DEPTH - 1 }, (_, i) => `${prefix}[${i + 2}]`);

/** Process identity and lineage: every t1612 rule carries these. */
export const PROCESS_FIELDS = [
  'proc.pid',
  'proc.ppid',
  'proc.name',
  'proc.exepath',
  'proc.cmdline',
  'proc.pname',
  'proc.pcmdline',
  ...ancestry('proc.aname'),
  ...ancestry('proc.apid'),
  'user.name',
] as const;

/** Container identity (container plugin, Falco >= 0.41). */
export const CONTAINER_FIELDS = [
  'container.id',
  'container.name',
  'container.image.repository',
  'container.image.tag',
] as const;

/** Cgroup markers of build steps (BuildKit, buildah); recommended on build and egress rules. */
export const CGROUP_FIELD = 'thread.cgroups';

/** The network side of an egress event. */
export const EGRESS_FIELDS = ['fd.sip', 'fd.sport', 'fd.l4proto', 'fd.sip.name'] as const;

/** The remote peer of an inbound Docker API connection (remote build trigger). */
export const PEER_FIELDS = ['fd.cip', 'fd.cport', 'fd.sport'] as const;

/** Fields the checker requires in the output of every rule tagged t1612_build. */
export const REQUIRED_BUILD_FIELDS: readonly string[] = [
  'proc.pid',
  'proc.ppid',
  'proc.name',
  'proc.cmdline',
  'proc.pname',
  'user.name',
  'container.id',
  'container.image.repository',
];

/** Fields the checker requires in the output of every rule tagged t1612_egress. */
export const REQUIRED_EGRESS_FIELDS: readonly string[] = [
  ...PROCESS_FIELDS,
  ...CONTAINER_FIELDS,
  ...EGRESS_FIELDS,
];

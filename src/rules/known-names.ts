/**
 * Names the rules checker accepts without a definition in the checked files, and fields the
 * installed sysdig may not know. Both lists are deliberately small and documented: anything
 * else must be defined in (or loaded with) the files being checked.
 */

/**
 * Macros of Falco's default ruleset (falcosecurity/rules falco_rules.yaml) that tuning files
 * commonly reference. A file loaded after falco_rules.yaml may use them; the checker accepts
 * them and, for the sysdig compile, expands them with these equivalent definitions (no evt.dir,
 * which Falco 0.43 deprecates). To check against the exact upstream text, load
 * falco_rules.yaml first in the same check.
 */
export const FALCO_DEFAULT_MACROS: ReadonlyMap<string, string> = new Map([
  ['never_true', 'evt.num = 0'],
  ['always_true', 'evt.num >= 0'],
  ['spawned_process', 'evt.type in (execve, execveat)'],
  ['container', 'container.id != host'],
  ['proc_name_exists', 'proc.name != "<NA>"'],
  [
    'outbound',
    '((evt.type = connect or (evt.type in (sendto, sendmsg) and fd.l4proto != tcp and fd.connected = false ' +
      'and fd.name_changed = true)) and (fd.typechar = 4 or fd.typechar = 6) and (fd.ip != "0.0.0.0" and ' +
      'fd.net != "127.0.0.0/8" and not fd.snet in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")) and ' +
      '(evt.rawres >= 0 or evt.res = EINPROGRESS))',
  ],
  [
    'inbound',
    '(((evt.type in (accept, accept4, listen)) or (evt.type in (recvfrom, recvmsg) and fd.l4proto != tcp and ' +
      'fd.connected = false and fd.name_changed = true)) and (fd.typechar = 4 or fd.typechar = 6) and ' +
      '(fd.ip != "0.0.0.0" and fd.net != "127.0.0.0/8") and (evt.rawres >= 0 or evt.res = EINPROGRESS))',
  ],
  ['open_write', "evt.type in (open, openat, openat2) and evt.is_open_write = true and fd.typechar = 'f'"],
  ['open_read', "evt.type in (open, openat, openat2) and evt.is_open_read = true and fd.typechar = 'f'"],
]);

/** Lists of Falco's default ruleset that conditions commonly reference, with their items. */
export const FALCO_DEFAULT_LISTS: ReadonlyMap<string, readonly string[]> = new Map([
  ['shell_binaries', ['ash', 'bash', 'csh', 'ksh', 'sh', 'tcsh', 'zsh', 'dash']],
  ['rfc_1918_addresses', ['"10.0.0.0/8"', '"172.16.0.0/12"', '"192.168.0.0/16"']],
  ['docker_binaries', ['docker', 'dockerd', 'containerd-shim', 'docker-runc', 'docker-proxy', 'docker-init']],
  ['container_engine_binaries', ['docker', 'dockerd', 'containerd', 'containerd-shim', 'runc', 'crun', 'podman', 'conmon']],
]);

/**
 * Fields Falco >= 0.41 has that the Debian sysdig (0.29.x, libs of 2022) does not. Before the
 * compile, each is replaced by an older field of the same type so the rest of the condition is
 * still checked; the newer field's own spelling is then not verified. Extend only with fields
 * documented in Falco's field reference for 0.41+.
 */
export const NEWER_FIELD_STANDINS: ReadonlyMap<string, string> = new Map([
  ['evt.hostname', 'proc.name'],
  ['container.full_id', 'container.id'],
  ['proc.pexepath', 'proc.exepath'],
  ['proc.pexe', 'proc.exe'],
  ['proc.is_vpgid_leader', 'proc.is_exe_writable'],
  ['container.host_pid', 'container.privileged'],
  ['container.host_network', 'container.privileged'],
  ['container.host_ipc', 'container.privileged'],
]);

/** Fields compared by event-type name: their values legitimately look like snake_case names. */
export const EVENT_TYPE_FIELDS: ReadonlySet<string> = new Set(['evt.type', 'syscall.type', 'evt.type.is']);

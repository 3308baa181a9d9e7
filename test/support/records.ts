/**
 * A well-formed build-session record for store and session-table tests: every field set to a
 * neutral value, the ones a test cares about given as overrides.
 */
import type { SessionRecord } from '../../src/model/session.js';

export function sessionRecord(over: Partial<SessionRecord> & Pick<SessionRecord, 'host' | 'startedAt'>): SessionRecord {
  return {
    id: 'x',
    lastActivity: over.startedAt,
    remotePeer: null,
    trigger: { rule: 'r', proc_name: 'docker', cmdline: null, user: null, container_id: null, remote_peer: null },
    evidence: [],
    pids: [],
    cgroups: [],
    containers: [],
    images: [],
    imageRefs: [],
    engine: null,
    expected: false,
    dockerBuilder: null,
    localClient: false,
    ...over,
  };
}

// The layer rule: folders under src/ are stages and imports only point down. The rule lives in
// eslint.config.js (import-x/no-restricted-paths zones built from LAYERS); these tests lint
// real probe files placed in the layers, so a broken or loosened zone table fails here.
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ESLint } from 'eslint';

const ROOT = join(import.meta.dirname, '..');

async function lintProbe(layer: string, source: string): Promise<string[]> {
  const file = join(ROOT, 'src', layer, `zz-layer-probe-${process.pid}.ts`);
  writeFileSync(file, source);
  try {
    const eslint = new ESLint({ cwd: ROOT });
    const [result] = await eslint.lintFiles([file]);
    return (result?.messages ?? []).filter((m) => m.ruleId === 'import-x/no-restricted-paths').map((m) => m.message);
  } finally {
    rmSync(file, { force: true });
  }
}

describe('layers (lint)', function () {
  // Type-aware linting starts a TypeScript program: seconds, not milliseconds.
  this.timeout(120_000);

  it('refuses an upward import, type-only included', async () => {
    const model = await lintProbe('model', "import type { Correlator } from '../detect/correlator.js';\nexport type X = Correlator;\n");
    assert.equal(model.length, 1);
    assert.match(model[0] ?? '', /src\/model may import only from nothing else/);
    const sources = await lintProbe('sources', "import { createStores } from '../store/stores.js';\nexport const y = createStores;\n");
    assert.equal(sources.length, 1, 'sources must not reach into the store');
    const store = await lintProbe('store', "import type { Daemon } from '../daemon.js';\nexport type Z = Daemon;\n");
    assert.equal(store.length, 1, 'nothing below the top imports the daemon');
    const deliver = await lintProbe('deliver', "import type { Correlator } from '../detect/correlator.js';\nexport type W = Correlator;\n");
    assert.equal(deliver.length, 1, 'delivery does not depend on detection');
  });

  it('allows the arrows that point down', async () => {
    const detect = await lintProbe(
      'detect',
      "import type { Stores } from '../store/stores.js';\nimport type { Alert } from '../model/alert.js';\nimport type { Metrics } from '../ops/metrics.js';\nexport type V = [Stores, Alert, Metrics];\n",
    );
    assert.deepEqual(detect, []);
    const deliver = await lintProbe('deliver', "import type { RedisClient } from '../store/redis/connection.js';\nexport type U = RedisClient;\n");
    assert.deepEqual(deliver, []);
  });
});

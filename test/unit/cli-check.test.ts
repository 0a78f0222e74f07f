import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

const dir = mkdtempSync(join(tmpdir(), 'ctgate-check-'));
const check = (content: Buffer | string, extra: string[] = []) => {
  const file = join(dir, `m${Math.random().toString(36).slice(2)}.hl7`);
  writeFileSync(file, content);
  const r = spawnSync(process.execPath, ['bin/ctgate.mjs', 'hl7', 'check', file, ...extra], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout ? JSON.parse(r.stdout) : null, err: r.stderr };
};

describe('ctgate hl7 check', () => {
  const fixture = readFileSync('fixtures/hl7/orm-chest-ct.hl7', 'utf8');

  it('prints the order and exits 0 for a chest-CT order with BOM and CRLF', () => {
    const r = check(`\uFEFF${fixture.replace(/\r?\n/g, '\r\n')}`);
    assert.equal(r.code, 0);
    assert.equal(r.out.accepted, true);
    assert.equal(r.out.chestCt, true);
    assert.equal(r.out.order.placerOrderNumber, 'PLC1001');
    assert.match(r.out.reason, /CPT 71250/);
  });

  it('exits 0 with chestCt false for an order that is not a chest CT', () => {
    const r = check(fixture.replace('71250^CT THORAX WO CONTRAST^C4', '70450^CT HEAD WO CONTRAST^C4'));
    assert.equal(r.code, 0);
    assert.equal(r.out.accepted, true);
    assert.equal(r.out.chestCt, false);
  });

  it('exits 2 with the exact reason when the message would be NAKed', () => {
    const r = check(fixture.replace('ORM^O01^ORM_O01', 'ORU^R01^ORU_R01'));
    assert.equal(r.code, 2);
    assert.equal(r.out.accepted, false);
    assert.match(r.out.reason, /message type "ORU" is not taken on this port/);
    assert.equal(r.out.error.code, 'unsupportedMessageType');
  });

  it('exits 78 naming the file when the mappings are invalid', () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'allowedFacilities: []\n');
    const r = spawnSync(process.execPath, ['bin/ctgate.mjs', 'hl7', 'check', 'fixtures/hl7/orm-chest-ct.hl7', '--mappings', bad], { encoding: 'utf8' });
    assert.equal(r.status, 78);
    assert.match(r.stderr, /bad\.yaml: invalid mappings/);
  });
});

import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  DEFAULT_SERIES_RULES,
  loadSeriesRules,
  normalTiltDeg,
  parseSeriesRules,
  type SeriesCandidate,
  SeriesRulesError,
  selectSeries,
} from '../../src/imaging/series-selection.js';

const AXIAL = [1, 0, 0, 0, 1, 0];
const CORONAL = [1, 0, 0, 0, 0, -1];
const SAGITTAL = [0, 1, 0, 0, 0, -1];

let n = 0;
const series = (over: Partial<SeriesCandidate> = {}): SeriesCandidate => {
  n++;
  return {
    seriesInstanceUid: `1.2.3.${n}`,
    seriesNumber: n,
    modality: 'CT',
    description: 'Thorax 1.0 Br40',
    imageType: ['ORIGINAL', 'PRIMARY', 'AXIAL'],
    sliceThickness: 1,
    orientation: AXIAL,
    numberOfInstances: 300,
    kernel: 'Br40',
    ...over,
  };
};

const decision = (sel: ReturnType<typeof selectSeries>, c: SeriesCandidate) => {
  const d = sel.decisions.find((x) => x.seriesInstanceUid === c.seriesInstanceUid);
  assert.ok(d, `decision for ${c.seriesInstanceUid}`);
  return d;
};

describe('series selection rules', () => {
  it('chooses the one axial original series among scout, coronal MPR, thick, short and derived series', () => {
    const scout = series({ description: 'Topogram 0.6 T20f', imageType: ['ORIGINAL', 'PRIMARY', 'LOCALIZER'], numberOfInstances: 1, orientation: CORONAL });
    const coronal = series({
      description: 'Cor 3mm',
      imageType: ['DERIVED', 'SECONDARY', 'MPR'],
      orientation: CORONAL,
      sliceThickness: 3,
      numberOfInstances: 120,
    });
    const thick = series({ description: 'Thorax 12.0', sliceThickness: 12, numberOfInstances: 30 });
    const short = series({ description: 'Thorax 1.0 partial', numberOfInstances: 12 });
    const derived = series({ description: 'Thorax recon', imageType: ['DERIVED', 'SECONDARY', 'AXIAL'] });
    const good = series({ description: 'Thorax 1.0 Br40' });
    const sel = selectSeries([scout, coronal, thick, short, derived, good]);
    assert.equal(sel.chosen?.seriesInstanceUid, good.seriesInstanceUid);
    assert.equal(sel.reason, undefined);

    const s = decision(sel, scout);
    assert.equal(s.accepted, false);
    assert.ok(s.reasons.some((r) => /includes LOCALIZER/.test(r)));
    assert.ok(s.reasons.some((r) => /matches exclude pattern/.test(r)));
    assert.ok(s.reasons.some((r) => /not axial: the slice normal is 90\.0°/.test(r)));
    assert.ok(s.reasons.some((r) => /1 instance\(s\), fewer than 20/.test(r)));

    const c = decision(sel, coronal);
    assert.ok(c.reasons.some((r) => /not axial/.test(r)));
    assert.ok(c.reasons.some((r) => /lacks ORIGINAL, PRIMARY/.test(r)));

    assert.deepEqual(decision(sel, thick).reasons, ['slice thickness 12 mm (SliceThickness) is outside 0.625–10 mm']);
    assert.deepEqual(decision(sel, short).reasons, ['12 instance(s), fewer than 20']);
    assert.deepEqual(decision(sel, derived).reasons, ['ImageType DERIVED\\SECONDARY\\AXIAL lacks ORIGINAL, PRIMARY']);
    const g = decision(sel, good);
    assert.equal(g.accepted, true);
    assert.equal(g.rank, 1);
    assert.match(g.reasons[0] as string, /^chosen: rank 1 of 1/);
  });

  it('refuses a coronal reformat by orientation alone, even when described and typed as an original axial', () => {
    const sneaky = series({ description: 'Thorax 2.0', orientation: CORONAL });
    const sag = series({ description: 'Thorax 2.0 b', orientation: SAGITTAL });
    const sel = selectSeries([sneaky, sag]);
    assert.equal(sel.chosen, undefined);
    assert.deepEqual(decision(sel, sneaky).reasons, ['not axial: the slice normal is 90.0° from the patient z axis (at most 10°)']);
  });

  it('accepts a small tilt within the tolerance and refuses a larger one', () => {
    const rad = (d: number) => (d * Math.PI) / 180;
    const tilted = (deg: number) => [1, 0, 0, 0, Math.cos(rad(deg)), Math.sin(rad(deg))];
    assert.ok(Math.abs((normalTiltDeg(tilted(8)) as number) - 8) < 1e-9);
    assert.equal(normalTiltDeg([1, 0, 0, 1, 0, 0]), undefined, 'parallel vectors are not an orientation');
    const ok = series({ orientation: tilted(8) });
    const bad = series({ orientation: tilted(15) });
    const sel = selectSeries([ok, bad]);
    assert.equal(sel.chosen?.seriesInstanceUid, ok.seriesInstanceUid);
    assert.match(decision(sel, bad).reasons[0] as string, /15\.0° from the patient z axis/);
  });

  it('uses the thickness range inclusively and falls back to the measured spacing when SliceThickness is missing', () => {
    const edge = series({ sliceThickness: 10, numberOfInstances: 30 });
    const thin = series({ sliceThickness: 0.5 });
    const spaced = series({ sliceThickness: undefined, sliceSpacing: 1.25 });
    const unknown = series({ sliceThickness: undefined });
    const sel = selectSeries([edge, thin, spaced, unknown]);
    assert.equal(decision(sel, edge).accepted, true);
    assert.deepEqual(decision(sel, thin).reasons, ['slice thickness 0.5 mm (SliceThickness) is outside 0.625–10 mm']);
    assert.equal(decision(sel, spaced).accepted, true);
    assert.ok(decision(sel, spaced).reasons.includes('slice thickness 1.25 mm (slice position spacing, SliceThickness missing)'));
    assert.deepEqual(decision(sel, unknown).reasons, ['slice thickness unknown (no SliceThickness and no measured slice spacing)']);
    assert.equal(sel.chosen?.seriesInstanceUid, spaced.seriesInstanceUid, 'thinner than the 10 mm one');
  });

  it('refuses interspaced slices (1 mm every 10 mm) when the spacing was measured', () => {
    const hrct = series({ description: 'HRCT', sliceThickness: 1, sliceSpacing: 10, numberOfInstances: 30 });
    const sel = selectSeries([hrct]);
    assert.deepEqual(decision(sel, hrct).reasons, ['slices are 10 mm apart but only 1 mm thick (gaps; at most 2× the thickness)']);
  });

  it('refuses a missing ImageType with a reason unless allowMissingImageType', () => {
    const bare = series({ imageType: [] });
    assert.deepEqual(decision(selectSeries([bare]), bare).reasons, ['no ImageType, so it cannot be shown to be ORIGINAL (allowMissingImageType is off)']);
    const lax = parseSeriesRules({ allowMissingImageType: true });
    assert.equal(selectSeries([bare], lax).chosen?.seriesInstanceUid, bare.seriesInstanceUid);
  });

  it('refuses other modalities, missing orientation, and excluded descriptions', () => {
    const dose = series({ modality: 'SR', description: 'Dose Report', imageType: [], orientation: undefined, sliceThickness: undefined, numberOfInstances: 1 });
    const mip = series({ description: 'Lung MIP 10mm' });
    const noIop = series({ orientation: undefined });
    const sel = selectSeries([dose, mip, noIop]);
    assert.equal(sel.chosen, undefined);
    assert.ok(decision(sel, dose).reasons[0]?.startsWith('modality SR is not CT'));
    assert.match(decision(sel, mip).reasons.join(' '), /description "Lung MIP 10mm" matches exclude pattern/);
    assert.deepEqual(decision(sel, noIop).reasons, ['no ImageOrientationPatient, so it cannot be shown to be axial']);
  });

  it('prefers a lung kernel over a thinner soft-tissue series, by description or by ConvolutionKernel', () => {
    const soft = series({ description: 'Thorax 0.625 STANDARD', sliceThickness: 0.625, kernel: 'STANDARD', numberOfInstances: 500 });
    const lung = series({ description: 'Chest 1.25', sliceThickness: 1.25, kernel: 'LUNG', numberOfInstances: 250 });
    const sel = selectSeries([soft, lung]);
    assert.equal(sel.chosen?.seriesInstanceUid, lung.seriesInstanceUid);
    assert.ok(decision(sel, lung).reasons.includes('preferred: kernel LUNG matches /^(lung|bone|boneplus)$/i'));
    assert.match(decision(sel, soft).reasons[0] as string, /^rank 2 of 2: series \d+ "Chest 1.25" is a preferred lung reconstruction and this is not/);

    const byDesc = series({ description: 'Thorax 1.0 B70f', sliceThickness: 1, kernel: undefined });
    assert.equal(selectSeries([soft, byDesc]).chosen?.seriesInstanceUid, byDesc.seriesInstanceUid);
    for (const k of ['B70f', 'Bl57', 'Br64', 'I70f', 'YA', 'L', 'FC52', 'FC86', 'BONEPLUS']) {
      const c = series({ description: 'Chest', kernel: k, sliceThickness: 2 });
      assert.equal(selectSeries([soft, c]).chosen?.seriesInstanceUid, c.seriesInstanceUid, `kernel ${k} is a lung kernel`);
    }
    for (const k of ['B30f', 'Br40', 'STANDARD', 'SOFT', 'B', 'FC08']) {
      const c = series({ description: 'Chest', kernel: k, sliceThickness: 2 });
      assert.equal(selectSeries([soft, c]).chosen?.seriesInstanceUid, soft.seriesInstanceUid, `kernel ${k} is not a lung kernel`);
    }

    // With preference switched off, the thinnest wins.
    const plain = parseSeriesRules({ preferDescription: [], preferKernel: [] });
    assert.equal(selectSeries([soft, lung], plain).chosen?.seriesInstanceUid, soft.seriesInstanceUid);
  });

  it('breaks ties by thinnest slices, then most instances, then SeriesNumber', () => {
    const a = series({ description: 'Chest A', kernel: 'B30f', sliceThickness: 2, numberOfInstances: 150 });
    const b = series({ description: 'Chest B', kernel: 'B30f', sliceThickness: 1, numberOfInstances: 300 });
    const c = series({ description: 'Chest C', kernel: 'B30f', sliceThickness: 1, numberOfInstances: 320 });
    const d = series({ description: 'Chest D', kernel: 'B30f', sliceThickness: 1, numberOfInstances: 320 });
    const sel = selectSeries([a, b, c, d]);
    assert.equal(sel.chosen?.seriesInstanceUid, c.seriesInstanceUid);
    assert.deepEqual(
      [a, b, c, d].map((x) => decision(sel, x).rank),
      [4, 3, 1, 2],
    );
    assert.match(decision(sel, a).reasons[0] as string, /has thinner slices \(1 mm < 2 mm\)/);
    assert.match(decision(sel, b).reasons[0] as string, /has more instances \(320 > 300\)/);
    assert.match(decision(sel, d).reasons[0] as string, /tied on preference, thickness and instances/);
    // Input order does not matter.
    assert.equal(selectSeries([d, b, a, c]).chosen?.seriesInstanceUid, c.seriesInstanceUid);
  });

  it('says why every series was refused when none fits', () => {
    const scout = series({ description: 'Scout', imageType: ['ORIGINAL', 'PRIMARY', 'LOCALIZER'], numberOfInstances: 2 });
    const thick = series({ description: 'Abdomen 12', sliceThickness: 12 });
    const sr = series({ modality: 'SR', description: undefined, imageType: [], numberOfInstances: 1 });
    const sel = selectSeries([scout, thick, sr]);
    assert.equal(sel.chosen, undefined);
    const reason = sel.reason as string;
    assert.match(reason, /^No series fits the selection rules: /);
    assert.ok(reason.includes(`series ${scout.seriesNumber} "Scout" (${scout.seriesInstanceUid}) was refused because`));
    assert.ok(reason.includes('includes LOCALIZER'));
    assert.ok(reason.includes(`series ${thick.seriesNumber} "Abdomen 12" (${thick.seriesInstanceUid}) was refused because slice thickness 12 mm`));
    assert.ok(reason.includes(`series ${sr.seriesNumber} (${sr.seriesInstanceUid}) was refused because modality SR is not CT`));
    assert.equal(selectSeries([]).reason, 'No series fits: the study has no series.');
  });

  it('applies includeDescription and custom thresholds', () => {
    const rules = parseSeriesRules({ includeDescription: ['thorax'], minSlices: 100, sliceThicknessMm: { max: 5 } });
    assert.equal(rules.doc.sliceThicknessMm.min, 0.625, 'unspecified bound keeps its default');
    const other = series({ description: 'Abdomen 1.0' });
    const few = series({ description: 'Thorax 1.0', numberOfInstances: 80 });
    const thick = series({ description: 'Thorax 6.0', sliceThickness: 6 });
    const sel = selectSeries([other, few, thick], rules);
    assert.equal(sel.chosen, undefined);
    assert.deepEqual(decision(sel, other).reasons, ['description "Abdomen 1.0" matches none of the include patterns']);
    assert.deepEqual(decision(sel, few).reasons, ['80 instance(s), fewer than 100']);
    assert.deepEqual(decision(sel, thick).reasons, ['slice thickness 6 mm (SliceThickness) is outside 0.625–5 mm']);
  });
});

describe('series rules validation', () => {
  const problems = (doc: unknown): string[] => {
    try {
      parseSeriesRules(doc, 'rules.yaml');
    } catch (e) {
      assert.ok(e instanceof SeriesRulesError);
      assert.match(e.message, /^rules\.yaml: invalid series rules/);
      return e.problems;
    }
    assert.fail('expected a SeriesRulesError');
  };

  it('names the bad key', () => {
    assert.deepEqual(problems({ minSlice: 20 }), ['(root): Unrecognized key: "minSlice"']);
    assert.match(problems({ minSlices: 'twenty' })[0] as string, /^minSlices: /);
    assert.match(problems({ minSlices: 2.5 })[0] as string, /^minSlices: /);
    assert.match(problems({ axialToleranceDeg: 120 })[0] as string, /^axialToleranceDeg: /);
    assert.match(problems({ excludeDescription: ['scout', '(unclosed'] })[0] as string, /^excludeDescription\.1: a valid regular expression/);
    assert.match(problems({ preferKernel: 'LUNG' })[0] as string, /^preferKernel: /);
    assert.match(problems({ sliceThicknessMm: { min: 5, max: 1 } })[0] as string, /^sliceThicknessMm: min must not be greater than max/);
    assert.match(problems({ sliceThicknessMm: { mn: 1 } })[0] as string, /^sliceThicknessMm: Unrecognized key: "mn"/);
    assert.match(problems({ modalities: [] })[0] as string, /^modalities: /);
    assert.match(problems({ allowMissingImageType: 'yes' })[0] as string, /^allowMissingImageType: /);
    assert.match(problems([1, 2])[0] as string, /^\(root\): /);
  });

  it('loads mappings/series.yaml, which spells out exactly the built-in defaults', () => {
    const file = loadSeriesRules('mappings/series.yaml');
    assert.deepEqual(file.doc, DEFAULT_SERIES_RULES.doc);
    assert.deepEqual(parseSeriesRules(null).doc, DEFAULT_SERIES_RULES.doc, 'an empty file gives the defaults');
  });

  it('reports an unreadable file and bad YAML with the file name', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ctgate-rules-'));
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'minSlices: [1,\n');
    assert.throws(
      () => loadSeriesRules(bad),
      (e: unknown) => e instanceof SeriesRulesError && /bad\.yaml: invalid series rules:\n {2}not valid YAML/.test(e.message),
    );
    assert.throws(
      () => loadSeriesRules(join(dir, 'missing.yaml')),
      (e: unknown) => e instanceof SeriesRulesError && /cannot read/.test(e.message),
    );
    const lower = join(dir, 'lower.yaml');
    writeFileSync(lower, 'modalities: [ct, " mr "]\nrequireImageType: [original]\n');
    const r = loadSeriesRules(lower);
    assert.deepEqual(r.doc.modalities, ['CT', 'MR']);
    assert.deepEqual(r.doc.requireImageType, ['ORIGINAL']);
  });
});

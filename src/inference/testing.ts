/**
 * Tiny ONNX models built in code (one node each), for tests and smoke checks of the ONNX plumbing when the
 * trained models are not at hand. Hand-written protobuf: ModelProto → GraphProto → NodeProto / ValueInfoProto.
 */

type Field = Uint8Array;

function varint(n: number | bigint): number[] {
  let v = BigInt(n);
  if (v < 0n) v += 1n << 64n;
  const out: number[] = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return out;
}

const concat = (parts: (Uint8Array | number[])[]): Uint8Array => {
  const arrays = parts.map((p) => (p instanceof Uint8Array ? p : Uint8Array.from(p)));
  const out = new Uint8Array(arrays.reduce((s, a) => s + a.length, 0));
  let o = 0;
  for (const a of arrays) {
    out.set(a, o);
    o += a.length;
  }
  return out;
};
const vint = (field: number, n: number | bigint): Field => Uint8Array.from([...varint(field << 3), ...varint(n)]);
const bytes = (field: number, b: Uint8Array): Field => concat([varint((field << 3) | 2), varint(b.length), b]);
const text = (field: number, s: string): Field => bytes(field, new TextEncoder().encode(s));
const msg = (field: number, ...parts: Field[]): Field => bytes(field, concat(parts));

const FLOAT = 1;
const ATTR_INT = 2;
const ATTR_INTS = 7;

export type Dim = number | string;
export type Attribute = { name: string; int: number } | { name: string; ints: number[] };

function valueInfo(field: number, name: string, dims: Dim[]): Field {
  const shape = dims.map((d) => (typeof d === 'number' ? msg(1, vint(1, d)) : msg(1, text(2, d))));
  return msg(field, text(1, name), msg(2, msg(1, vint(1, FLOAT), msg(2, ...shape))));
}

function attribute(a: Attribute): Field {
  if ('int' in a) return msg(5, text(1, a.name), vint(3, a.int), vint(20, ATTR_INT));
  return msg(5, text(1, a.name), ...a.ints.map((v) => vint(8, v)), vint(20, ATTR_INTS));
}

export interface OneNodeModel {
  op: string;
  input: { name: string; dims: Dim[] };
  output: { name: string; dims: Dim[] };
  attributes?: Attribute[];
  opset?: number;
}

/** A float32 model with one node (e.g. Identity, Sigmoid, ReduceMean), as ONNX bytes. */
export function oneNodeOnnx(m: OneNodeModel): Uint8Array {
  const node = msg(1, text(1, m.input.name), text(2, m.output.name), text(3, 'n0'), text(4, m.op), ...(m.attributes ?? []).map(attribute));
  const graph = msg(7, node, text(2, 'g'), valueInfo(11, m.input.name, m.input.dims), valueInfo(12, m.output.name, m.output.dims));
  return concat([vint(1, 7), text(2, 'ctgate-test'), graph, msg(8, text(1, ''), vint(2, m.opset ?? 13))]);
}

/** Lesion stand-in: lesion_prob = ct (NCDHW, dynamic D/H/W). */
export const identityLesionOnnx = (inputName = 'ct', outputName = 'lesion_prob') =>
  oneNodeOnnx({ op: 'Identity', input: { name: inputName, dims: [1, 1, 'D', 'H', 'W'] }, output: { name: outputName, dims: [1, 1, 'D', 'H', 'W'] } });

/** Classifier stand-in: prob = mean of every input voxel, shape [1, 1]. */
export const meanClassifierOnnx = (shape: number[], inputName = 'ct_mask', outputName = 'prob') =>
  oneNodeOnnx({
    op: 'ReduceMean',
    input: { name: inputName, dims: shape },
    output: { name: outputName, dims: [1, 1, 1, 1, 1] },
    attributes: [
      { name: 'axes', ints: [1, 2, 3, 4] },
      { name: 'keepdims', int: 1 },
    ],
  });

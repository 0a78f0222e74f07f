// Minimal typings for the parts of simple-hl7 (CommonJS, untyped) that bench/parse.ts uses.
declare module 'simple-hl7' {
  export interface Component {
    value: (string | string[])[];
  }

  /** `value` holds one array of components, or one nested Field per repetition when the field repeats. */
  export interface Field {
    value: (Component[] | Field)[];
  }

  export interface Segment {
    name: string;
    fields: Field[];
    getField(index: number, repeatIndex?: number): string;
    getComponent(fieldIndex: number, componentIndex: number, subComponentIndex?: number): string;
  }

  export interface Message {
    header: Segment;
    segments: Segment[];
    getSegment(name: string): Segment | undefined;
    getSegments(name: string): Segment[];
  }

  export class Parser {
    constructor(opts?: { segmentSeperator?: string });
    parse(s: string): Message;
  }

  const simpleHl7: { Parser: typeof Parser };
  export default simpleHl7;
}

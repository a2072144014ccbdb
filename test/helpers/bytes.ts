/**
 * The bytes of a typed array as a Buffer view: tap compares a Buffer at once, where it walks a
 * typed array value by value (seconds for a volume or a network's weights).
 */
export const bytes = (a: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)

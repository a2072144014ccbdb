/**
 * The number of elements of a tensor, volume or image of a shape (1 for a scalar's `[]`).
 *
 * @example
 * elementCount([4, 128, 128, 1]) // 65536
 */
export const elementCount = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1)

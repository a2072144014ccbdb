/**
 * Whether an optional package can be loaded from here, without loading it: the engines that
 * are not dependencies (tfjs-node, tfjs-node-gpu) or are optional ones (webgpu).
 *
 * @example
 * installed('@tensorflow/tfjs-node-gpu') // false on a machine without it
 */
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

export const installed = (pkg: string): boolean => {
  try {
    require.resolve(`${pkg}/package.json`)
    return true
  } catch {
    return false
  }
}

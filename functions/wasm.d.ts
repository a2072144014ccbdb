/**
 * What a `.wasm` import is in the Worker bundle: wrangler's CompiledWasm rule (wrangler.toml)
 * turns it into a compiled `WebAssembly.Module`, since Workers may not compile wasm at run time.
 */
declare module '*.wasm' {
  const module: WebAssembly.Module
  export default module
}

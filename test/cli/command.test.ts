import { join } from 'node:path'
import t from 'tap'
import { CliError, modelOutput } from '../../src/cli/command.ts'

t.test('a model output: the card beside the ONNX file, the name from the file name', async (t) => {
  t.same(modelOutput(join('models', 'acdc-lge.onnx')), {
    onnx: join('models', 'acdc-lge.onnx'),
    card: join('models', 'acdc-lge.json'),
    name: 'acdc-lge',
  })
  t.same(modelOutput('v1.2.ONNX'), { onnx: 'v1.2.ONNX', card: 'v1.2.json', name: 'v1.2' })
})

t.test('anything but an .onnx path is a usage error (exit 2) naming it', async (t) => {
  for (const out of ['m.json', 'm.onnx.json', 'onnx', join('m.onnx', 'x.pt')]) {
    const thrown = t.throws(() => modelOutput(out), out)
    t.ok(thrown instanceof CliError && thrown.exitCode === 2, `${out}: exit 2`)
    t.equal((thrown as Error).message, `-o must name an .onnx file, got ${out}`)
  }
})

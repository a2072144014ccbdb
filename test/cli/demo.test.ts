import * as E from 'fp-ts/lib/Either.js'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { parseModelCard } from '../../src/serve/model-card.ts'
import { maco } from '../helpers/cli.ts'

t.test('the demo trains, exports, evaluates through ONNX and says what to do next', async (t) => {
  const out = join(t.testdir(), 'demo')
  const r = await maco('demo', '--out', out, '--epochs', '1', '--engine', 'wasm')
  t.equal(r.code, 0, r.err)
  t.match(r.err, /demo: training the smoke recipe on synthetic phantoms/)
  t.match(r.err, /epoch 1\/1: loss /)
  t.match(
    r.out,
    /^Validation phantoms segmented through .*demo\.onnx \(onnxruntime-(node|web)\):\n/,
  )
  t.match(
    r.out,
    /case\s+RV Dice\s+MYO Dice\s+LV Dice\n(phantom02\d(\s+\d\.\d{3}){3}\n){4}mean(\s+\d\.\d{3}){3}\n/,
  )
  t.match(r.out, /mean Dice \d\.\d{3}, HD95 [\d.]+ mm, ASD [\d.]+ mm/)
  t.match(r.out, `npx maco serve --models ${out}\n`)
  t.match(
    r.out,
    `curl -s --data-binary @${join(out, 'phantom024_image.nii.gz')} http://127.0.0.1:8787/v1/models/demo/segment -o mask.nii.gz`,
  )
  const card = parseModelCard(await readFile(join(out, 'demo.json'), 'utf8'))
  t.ok(E.isRight(card) && card.right.name === 'demo')

  const predicted = await maco(
    'predict',
    '--model',
    join(out, 'demo.onnx'),
    '--input',
    join(out, 'phantom024_image.nii.gz'),
    '-o',
    join(out, 'pred'),
  )
  t.equal(predicted.code, 0, 'the sample scan it writes is ready for the next step')
})

t.test('the demo takes no arguments', async (t) => {
  const r = await maco('demo', 'acdc')
  t.equal(r.code, 2)
  t.equal(r.err, "maco demo: unexpected argument 'acdc'\n")
  const e = await maco('demo', '--epochs', 'many')
  t.equal(e.code, 2)
})

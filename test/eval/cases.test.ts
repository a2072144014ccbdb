import t from 'tap'
import * as E from 'fp-ts/lib/Either.js'
import { caseFiles, caseName, pairCases } from '../../src/eval/cases.ts'

t.test('case names drop the extension and one role suffix', async (t) => {
  t.equal(caseName('/data/val/patient003_frame01_label.nii.gz'), 'patient003_frame01')
  t.equal(caseName('out/patient003_frame01_pred.nii'), 'patient003_frame01')
  t.equal(caseName('subject3_DE_manual.nii.gz'), 'subject3_DE')
  t.equal(caseName('x_gt.NII.GZ'), 'x')
  t.equal(caseName('x_seg.nii'), 'x')
  t.equal(
    caseName('patient003_frame01_image_pred.nii.gz'),
    'patient003_frame01',
    'named after its image',
  )
  t.equal(
    caseName('patient003_frame01_image.nii.gz'),
    'patient003_frame01_image',
    'an image is no mask',
  )
  t.equal(caseName('_label.nii.gz'), '_label', 'nothing left to name')
  t.equal(caseName('a_label_pred.nii.gz'), 'a_label', 'only one role suffix')
})

t.test('a folder with masks next to images keeps only the masks', async (t) => {
  const acdc = [
    'p1_image.nii.gz',
    'p1_label.nii.gz',
    'p1_scribble.nii.gz',
    'README.md',
    'p0_label.nii.gz',
  ]
  t.same(caseFiles(acdc), ['p0_label.nii.gz', 'p1_label.nii.gz'])
  t.same(
    caseFiles(['b.nii', 'a.nii.gz', 'notes.txt']),
    ['a.nii.gz', 'b.nii'],
    'no role suffix: every NIfTI',
  )
  t.same(caseFiles(['notes.txt']), [])
})

t.test('pairs by case, and says what is unmatched', async (t) => {
  t.same(
    pairCases(['o/b_pred.nii.gz', 'o/a_pred.nii.gz'], ['g/a_label.nii.gz', 'g/b_label.nii.gz']),
    E.right([
      { case: 'a', pred: 'o/a_pred.nii.gz', gt: 'g/a_label.nii.gz' },
      { case: 'b', pred: 'o/b_pred.nii.gz', gt: 'g/b_label.nii.gz' },
    ]),
  )
  t.same(
    pairCases(['a_pred.nii', 'c_pred.nii'], ['a_gt.nii']),
    E.left('no ground truth for case(s) c'),
  )
  t.same(
    pairCases(['a.nii'], ['a.nii', 'b.nii', 'c.nii', 'd.nii', 'e.nii']),
    E.left('no prediction for case(s) b, c, d and 1 more'),
  )
  t.same(
    pairCases(['a_pred.nii', 'a_seg.nii.gz'], ['a.nii']),
    E.left('two prediction files for case a: a_pred.nii and a_seg.nii.gz'),
  )
})

/**
 * What a dataset is to the rest of the toolkit: a list of cases, each naming the files of
 * its roles (image, scribble, label), plus what the label values mean. Listing reads only
 * folder entries; voxels are read when a pipeline's `loadNifti` stage asks for them.
 *
 * @example
 * const ds = await acdcDataset('../shared/data/acdc', 'train35')()
 * // Right({ name: 'acdc', classes: ['background', 'RV', 'MYO', 'LV'], unlabelled: 4,
 * //         cases: [{ case: 'patient001_frame01', split: 'train35', image: '.../patient001_frame01_image.nii.gz', ... }] })
 */

export interface DatasetCase {
  readonly case: string
  readonly split?: string
  readonly image: string
  readonly scribble?: string
  readonly label?: string
}

export interface Dataset {
  readonly name: string
  /** Class names by label value: `classes[v]` names value v. */
  readonly classes: readonly string[]
  /** The scribble value of pixels nobody annotated. */
  readonly unlabelled: number
  readonly cases: readonly DatasetCase[]
}

/** The classes of the cardiac datasets (ACDC, MSCMR) and of the phantoms. */
export const CARDIAC_CLASSES: readonly string[] = ['background', 'RV', 'MYO', 'LV']
export const CARDIAC_UNLABELLED = 4

/**
 * The OpenAPI 3.1 description of the segmentation service, served at `/openapi.json` so
 * that clients can be generated and the contract read in one place. Written out by hand
 * (the service has a few routes; a test holds it to the routes the app serves); the limits
 * it states are the server's actual ones. The fine-tune job routes (`jobs.ts`) are described
 * everywhere: where no trainer is wired in (Workers) they answer 501.
 *
 * @example
 * openApiDocument({ maxBytes: 128 * 2 ** 20, maxVoxels: 2 ** 26, apiKey: true }).paths['/healthz']
 */

export interface OpenApiOptions {
  readonly maxBytes: number
  readonly maxVoxels: number
  /** Whether the `/v1` routes need an API key. */
  readonly apiKey: boolean
}

const json = (schema: object) => ({ 'application/json': { schema } })

const error = (description: string) => ({
  description,
  content: json({ $ref: '#/components/schemas/Error' }),
})

const MODEL_NAME = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$' }

const binary = (type: string) => ({ type: 'string', contentMediaType: type })

const ModelCard = {
  type: 'object',
  required: ['name', 'classes', 'input', 'normalisation', 'training', 'onnx'],
  properties: {
    name: MODEL_NAME,
    classes: {
      type: 'array',
      description: 'In output-channel order.',
      items: {
        type: 'object',
        required: ['name', 'value'],
        properties: {
          name: { type: 'string' },
          value: { type: 'integer', minimum: 0, maximum: 255 },
        },
      },
    },
    input: {
      type: 'object',
      required: ['spacing', 'size'],
      properties: {
        spacing: {
          type: 'array',
          items: { type: 'number' },
          minItems: 2,
          maxItems: 2,
          description: 'In-plane mm, [x, y].',
        },
        size: {
          type: 'array',
          items: { type: 'integer' },
          minItems: 2,
          maxItems: 2,
          description: 'Network input [width, height].',
        },
      },
    },
    normalisation: { const: 'zscore-slice' },
    training: {
      type: 'object',
      required: ['recipe', 'data'],
      properties: { recipe: { type: 'string' }, data: { type: 'string' } },
    },
    validation: {
      type: 'object',
      properties: {
        dice: { type: 'object', additionalProperties: { type: 'number' } },
        hd95: { type: 'object', additionalProperties: { type: 'number' } },
        asd: { type: 'object', additionalProperties: { type: 'number' } },
        data: { type: 'string' },
      },
    },
    onnx: {
      type: 'object',
      required: ['sha256'],
      properties: { sha256: { type: 'string', pattern: '^[0-9a-f]{64}$' } },
    },
    parent: { type: 'string' },
    postprocess: {
      type: 'string',
      enum: ['none', 'largest-component'],
      description:
        "Applied to this model's masks after the argmax: largest-component keeps each class's largest 3D connected component.",
    },
    tta: {
      type: 'string',
      enum: ['none', 'flip', 'dihedral'],
      description:
        'Test-time augmentation: the class probabilities averaged over the slice and its mirror images (flip: 4 views; dihedral: also the transposes, 8).',
    },
  },
}

const nullable = (schema: { readonly type: string } & Record<string, unknown>) => ({
  ...schema,
  type: [schema.type, 'null'],
})

/** The options of a fine-tune request, JSON or multipart alike (but for `classes`). */
const finetuneOptions = {
  epochs: {
    type: 'integer',
    minimum: 1,
    default: 10,
    description: "At most the server's limit (400 beyond).",
  },
  freeze: {
    enum: ['encoder', 'none'],
    default: 'none',
    description: 'encoder: train the decoder and the head only.',
  },
  lr: { type: 'number', exclusiveMinimum: 0, maximum: 1, default: 5e-4 },
  name: {
    ...MODEL_NAME,
    description: "The new model's name (409 if taken). Default: PARENT-ft-JOBID.",
  },
  unlabelled: {
    type: 'integer',
    maximum: 255,
    description:
      "The scribbles' value for unscribbled voxels, at least the number of classes. Default: the larger of 4 and the number of classes.",
  },
}

const classesDescription =
  "Class names in output-channel order, background first (at least 2). Default: the parent's classes; another count gives the new model a new head."

const volumeDescription = {
  image: 'NIfTI-1 volumes (.nii or .nii.gz), one per scan, checked as segment checks its body.',
  scribble:
    'A scribble volume per image, in the same order and of the same dims: class values where scribbled, the unlabelled value elsewhere (values are checked when the job prepares its data: a bad one fails the job).',
  label:
    'Optional full label volumes, one per image or none: the new model is validated on them (Dice on the card).',
}

const FinetuneRequest = {
  type: 'object',
  required: ['volumes'],
  additionalProperties: false,
  properties: {
    volumes: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['image', 'scribble'],
        additionalProperties: false,
        properties: Object.fromEntries(
          Object.entries(volumeDescription).map(([role, description]) => [
            role,
            { type: 'string', contentEncoding: 'base64', description },
          ]),
        ),
      },
    },
    ...finetuneOptions,
    classes: {
      type: 'array',
      items: { type: 'string', minLength: 1 },
      description: classesDescription,
    },
  },
}

const FinetuneForm = {
  type: 'object',
  required: ['image', 'scribble'],
  properties: {
    ...Object.fromEntries(
      Object.entries(volumeDescription).map(([role, description]) => [
        role,
        { type: 'array', items: binary('application/octet-stream'), description },
      ]),
    ),
    ...finetuneOptions,
    classes: { type: 'string', description: `Comma-separated. ${classesDescription}` },
  },
}

const Job = {
  type: 'object',
  required: [
    'id',
    'model',
    'name',
    'state',
    'createdAt',
    'startedAt',
    'finishedAt',
    'volumes',
    'options',
    'progress',
    'error',
    'validation',
  ],
  properties: {
    id: { type: 'string', pattern: '^[0-9a-f]{12}$' },
    model: { type: 'string', description: 'The model it fine-tunes.' },
    name: { ...MODEL_NAME, description: 'The model it makes (listed once the job is done).' },
    state: { enum: ['queued', 'running', 'done', 'failed'] },
    createdAt: { type: 'string', format: 'date-time' },
    startedAt: nullable({ type: 'string', format: 'date-time' }),
    finishedAt: nullable({ type: 'string', format: 'date-time' }),
    volumes: { type: 'integer', minimum: 1 },
    options: {
      type: 'object',
      required: ['epochs', 'freeze', 'lr', 'classes', 'unlabelled'],
      properties: {
        epochs: { type: 'integer' },
        freeze: { enum: ['encoder', 'none'] },
        lr: { type: 'number' },
        classes: { type: 'array', items: { type: 'string' } },
        unlabelled: { type: 'integer' },
      },
    },
    progress: {
      type: 'object',
      required: ['stage', 'epoch', 'epochs', 'step', 'steps', 'loss', 'valDice'],
      properties: {
        stage: {
          type: 'string',
          description: 'waiting, starting, preparing, training, saving or finished.',
        },
        epoch: { type: 'integer' },
        epochs: { type: 'integer' },
        step: { type: 'integer', description: 'Training steps done, of `steps`.' },
        steps: { type: 'integer' },
        loss: nullable({ type: 'number', description: 'Of the last epoch.' }),
        valDice: nullable({
          type: 'number',
          description: 'Of the last epoch, when labels came with the job.',
        }),
      },
    },
    error: nullable({ type: 'string', description: 'Why a failed job failed.' }),
    validation: nullable({
      type: 'object',
      additionalProperties: { type: 'number' },
      description: "The new model's validation Dice per class, when labels came with the job.",
    }),
  },
}

const JobAccepted = {
  ...Job,
  required: ['job', ...Job.required],
  properties: { job: { type: 'string', description: 'The same as id.' }, ...Job.properties },
}

const noTrainer = error('This deployment has no trainer (Workers): fine-tuning runs on maco serve')

const Segmentation = {
  type: 'object',
  required: ['model', 'shape', 'spacing', 'classes', 'mask'],
  properties: {
    model: { type: 'string' },
    shape: {
      type: 'array',
      items: { type: 'integer' },
      description: 'The input dims (x, y[, z[, 1]]).',
    },
    spacing: {
      type: 'array',
      items: { type: 'number' },
      description: 'Voxel size in mm, as the input says.',
    },
    classes: {
      type: 'array',
      items: {
        type: 'object',
        required: ['name', 'value', 'voxels', 'volumeMl'],
        properties: {
          name: { type: 'string' },
          value: { type: 'integer' },
          voxels: { type: 'integer' },
          volumeMl: {
            type: ['number', 'null'],
            description: 'voxels x voxel volume / 1000; null for a PNG (no slice thickness).',
          },
        },
      },
    },
    mask: {
      type: 'object',
      required: ['encoding', 'data'],
      properties: {
        encoding: {
          const: 'base64-gzip-uint8',
          description:
            'data = base64(gzip(mask)), the mask one uint8 class value per voxel of `shape`, x fastest, then y, then z (NIfTI order; for a PNG, rows top to bottom).',
        },
        data: { type: 'string', contentEncoding: 'base64' },
      },
    },
  },
}

export const openApiDocument = (o: OpenApiOptions) => ({
  openapi: '3.1.0',
  info: {
    title: 'MaCo segmentation service',
    version: '1',
    description:
      'Scribble-supervised (MaCo) segmentation models behind one HTTP contract. Bodies are sniffed by their magic bytes, not by Content-Type. Every error is JSON {"error": "one-line reason"}; a path below asked with a method it does not list answers 405 with an Allow header. Each response carries x-request-id (the one sent, or a new one).',
  },
  ...(o.apiKey ? { security: [{ bearer: [] }, { apiKey: [] }] } : {}),
  paths: {
    '/healthz': {
      get: {
        summary: 'Liveness',
        security: [],
        responses: {
          '200': {
            description: 'Serving',
            content: json({
              type: 'object',
              required: ['status'],
              properties: { status: { const: 'ok' } },
            }),
          },
        },
      },
    },
    '/openapi.json': {
      get: {
        summary: 'This document',
        security: [],
        responses: {
          '200': {
            description: 'OpenAPI 3.1',
            content: json({
              type: 'object',
              required: ['openapi', 'info', 'paths'],
              properties: { openapi: { const: '3.1.0' } },
            }),
          },
        },
      },
    },
    '/v1/models': {
      get: {
        summary: 'The model cards',
        responses: {
          '200': {
            description: 'Every model served',
            content: json({
              type: 'object',
              required: ['models'],
              properties: {
                models: { type: 'array', items: { $ref: '#/components/schemas/ModelCard' } },
              },
            }),
          },
          '401': error('API key missing or wrong'),
        },
      },
    },
    '/v1/models/{name}': {
      get: {
        summary: 'One model card',
        parameters: [{ $ref: '#/components/parameters/name' }],
        responses: {
          '200': {
            description: 'The card',
            content: json({ $ref: '#/components/schemas/ModelCard' }),
          },
          '401': error('API key missing or wrong'),
          '404': error('No model of that name'),
        },
      },
    },
    '/v1/models/{name}/onnx': {
      get: {
        summary: 'The model as an ONNX file, for clients that run it themselves',
        description:
          "The bytes the card's onnx.sha256 names. Run as the segment endpoint does: per slice resample to the card's input.spacing, centre crop/pad to input.size, z-score, softmax output 'probabilities' back to the native grid, argmax, then the card's postprocess.",
        parameters: [{ $ref: '#/components/parameters/name' }],
        responses: {
          '200': {
            description: 'The ONNX model',
            content: { 'application/octet-stream': { schema: binary('application/octet-stream') } },
          },
          '401': error('API key missing or wrong'),
          '404': error('No model of that name'),
        },
      },
    },
    '/v1/models/{name}/finetune': {
      post: {
        summary: 'Fine-tune a model on scribbled volumes, as a job',
        description:
          'The request is checked in full (API key, size and voxel limits as for segment, each volume decoded, dims matched, options) before the job exists; the job then runs on the server, one at a time, and when done adds the new model (its card names the parent) to /v1/models. The server limits the volumes per job (413 beyond), the epochs (400 beyond) and the jobs waiting or running (429 beyond).',
        parameters: [{ $ref: '#/components/parameters/name' }],
        requestBody: {
          required: true,
          content: {
            'multipart/form-data': {
              schema: { $ref: '#/components/schemas/FinetuneForm' },
              encoding: {
                image: { contentType: 'application/octet-stream, application/gzip' },
                scribble: { contentType: 'application/octet-stream, application/gzip' },
                label: { contentType: 'application/octet-stream, application/gzip' },
              },
            },
            ...json({ $ref: '#/components/schemas/FinetuneRequest' }),
          },
        },
        responses: {
          '202': {
            description: 'Queued',
            headers: {
              location: {
                description: 'The job: /v1/jobs/{id}',
                schema: { type: 'string' },
              },
            },
            content: json({ $ref: '#/components/schemas/JobAccepted' }),
          },
          '400': error(
            'Malformed body, a volume that is not a readable NIfTI-1 file, dims that differ, unpaired files or a bad option',
          ),
          '401': error('API key missing or wrong'),
          '404': error('No model of that name'),
          '409': error("The new model's name is taken, or the parent has no files to fine-tune"),
          '413': error('Body, voxel count or volume count over the limit'),
          '415': error(
            'Neither multipart/form-data nor application/json, or a volume that is not NIfTI-1',
          ),
          '429': error('Too many jobs waiting or running'),
          '501': noTrainer,
        },
      },
    },
    '/v1/jobs': {
      get: {
        summary: 'Every job, newest first',
        responses: {
          '200': {
            description: 'The jobs this server knows (they outlive restarts)',
            content: json({
              type: 'object',
              required: ['jobs'],
              properties: { jobs: { type: 'array', items: { $ref: '#/components/schemas/Job' } } },
            }),
          },
          '401': error('API key missing or wrong'),
          '501': noTrainer,
        },
      },
    },
    '/v1/jobs/{id}': {
      get: {
        summary: 'A job: its state and progress',
        parameters: [{ $ref: '#/components/parameters/id' }],
        responses: {
          '200': { description: 'The job', content: json({ $ref: '#/components/schemas/Job' }) },
          '401': error('API key missing or wrong'),
          '404': error('No job of that id'),
          '501': noTrainer,
        },
      },
    },
    '/v1/jobs/{id}/events': {
      get: {
        summary: 'A job as server-sent events, until it ends',
        parameters: [{ $ref: '#/components/parameters/id' }],
        responses: {
          '200': {
            description:
              "An event now and on every change: `event: progress` while the job waits or runs, then `event: done` or `event: failed`, after which the stream ends. Each event's data is the job as JSON (the Job schema), its id a counter from 0. A client that goes away stops its stream, not the job.",
            content: { 'text/event-stream': { schema: { type: 'string' } } },
          },
          '401': error('API key missing or wrong'),
          '404': error('No job of that id'),
          '501': noTrainer,
        },
      },
    },
    '/v1/models/{name}/segment': {
      post: {
        summary: 'Segment a volume or an image',
        description: `The body is a NIfTI-1 volume (.nii or .nii.gz; 2D, 3D, or 4D with one frame) or a 2D PNG, at most ${o.maxBytes} bytes and ${o.maxVoxels} voxels (checked from the header before decompressing). The answer is a uint8 mask with the input's dims and geometry (NIfTI: same affine, qform/sform and pixdim, gzipped if the input was; PNG: 8-bit grey class values), or JSON with Accept: application/json. A PNG without a pHYs chunk is taken to be at the model's spacing.`,
        parameters: [
          { $ref: '#/components/parameters/name' },
          {
            name: 'tta',
            in: 'query',
            required: false,
            schema: { type: 'string', enum: ['none', 'flip', 'dihedral'] },
            description:
              "Test-time augmentation for this request, in place of the card's: the class probabilities averaged over the slice and its mirror images (flip: 4 inferences a slice; dihedral: also the transposes, 8).",
          },
        ],
        requestBody: {
          required: true,
          content: {
            'application/octet-stream': {
              schema: binary('application/octet-stream'),
            },
            'application/gzip': {
              schema: binary('application/gzip'),
            },
            'image/png': { schema: binary('image/png') },
          },
        },
        responses: {
          '200': {
            description: 'The mask',
            content: {
              'application/gzip': {
                schema: binary('application/gzip'),
              },
              'application/octet-stream': {
                schema: binary('application/octet-stream'),
              },
              'image/png': { schema: binary('image/png') },
              ...json({ $ref: '#/components/schemas/Segmentation' }),
            },
          },
          '400': error(
            'Empty body, malformed or truncated file, dims that cannot be segmented, or an unknown tta',
          ),
          '401': error('API key missing or wrong'),
          '404': error('No model of that name'),
          '413': error('Body or voxel count over the limit'),
          '415': error('Neither NIfTI-1 nor PNG'),
        },
      },
    },
  },
  components: {
    parameters: {
      name: { name: 'name', in: 'path', required: true, schema: { type: 'string' } },
      id: {
        name: 'id',
        in: 'path',
        required: true,
        schema: { type: 'string', pattern: '^[0-9a-f]{12}$' },
      },
    },
    securitySchemes: {
      bearer: { type: 'http', scheme: 'bearer' },
      apiKey: { type: 'apiKey', in: 'header', name: 'x-api-key' },
    },
    schemas: {
      Error: { type: 'object', required: ['error'], properties: { error: { type: 'string' } } },
      ModelCard,
      Segmentation,
      FinetuneRequest,
      FinetuneForm,
      Job,
      JobAccepted,
    },
  },
})

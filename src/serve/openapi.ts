/**
 * The OpenAPI 3.1 description of the segmentation service, served at `/openapi.json` so
 * that clients can be generated and the contract read in one place. Written out by hand
 * (the service has four routes); the limits it states are the server's actual ones.
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

const error = (description: string) => ({
  description,
  content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
})

const ModelCard = {
  type: 'object',
  required: ['name', 'classes', 'input', 'normalisation', 'training', 'onnx'],
  properties: {
    name: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$' },
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
      required: ['dice'],
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
  },
}

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
      'Scribble-supervised (MaCo) segmentation models behind one HTTP contract. Bodies are sniffed by their magic bytes, not by Content-Type. Every error is JSON {"error": "one-line reason"}. Each response carries x-request-id (the one sent, or a new one).',
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
            content: {
              'application/json': {
                schema: {
                  type: 'object',
                  required: ['status'],
                  properties: { status: { const: 'ok' } },
                },
              },
            },
          },
        },
      },
    },
    '/openapi.json': {
      get: {
        summary: 'This document',
        security: [],
        responses: { '200': { description: 'OpenAPI 3.1' } },
      },
    },
    '/v1/models': {
      get: {
        summary: 'The model cards',
        responses: {
          '200': {
            description: 'Every model served',
            content: {
              'application/json': {
                schema: {
                  type: 'object',
                  required: ['models'],
                  properties: {
                    models: { type: 'array', items: { $ref: '#/components/schemas/ModelCard' } },
                  },
                },
              },
            },
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
            content: { 'application/json': { schema: { $ref: '#/components/schemas/ModelCard' } } },
          },
          '401': error('API key missing or wrong'),
          '404': error('No model of that name'),
        },
      },
    },
    '/v1/models/{name}/segment': {
      post: {
        summary: 'Segment a volume or an image',
        description: `The body is a NIfTI-1 volume (.nii or .nii.gz; 2D, 3D, or 4D with one frame) or a 2D PNG, at most ${o.maxBytes} bytes and ${o.maxVoxels} voxels (checked from the header before decompressing). The answer is a uint8 mask with the input's dims and geometry (NIfTI: same affine, qform/sform and pixdim, gzipped if the input was; PNG: 8-bit grey class values), or JSON with Accept: application/json. A PNG without a pHYs chunk is taken to be at the model's spacing.`,
        parameters: [{ $ref: '#/components/parameters/name' }],
        requestBody: {
          required: true,
          content: {
            'application/octet-stream': {
              schema: { type: 'string', contentMediaType: 'application/octet-stream' },
            },
            'application/gzip': {
              schema: { type: 'string', contentMediaType: 'application/gzip' },
            },
            'image/png': { schema: { type: 'string', contentMediaType: 'image/png' } },
          },
        },
        responses: {
          '200': {
            description: 'The mask',
            content: {
              'application/gzip': {
                schema: { type: 'string', contentMediaType: 'application/gzip' },
              },
              'application/octet-stream': {
                schema: { type: 'string', contentMediaType: 'application/octet-stream' },
              },
              'image/png': { schema: { type: 'string', contentMediaType: 'image/png' } },
              'application/json': { schema: { $ref: '#/components/schemas/Segmentation' } },
            },
          },
          '400': error('Empty body, malformed or truncated file, or dims that cannot be segmented'),
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
    },
    securitySchemes: {
      bearer: { type: 'http', scheme: 'bearer' },
      apiKey: { type: 'apiKey', in: 'header', name: 'x-api-key' },
    },
    schemas: {
      Error: { type: 'object', required: ['error'], properties: { error: { type: 'string' } } },
      ModelCard,
      Segmentation,
    },
  },
})

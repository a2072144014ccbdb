/**
 * The part of the ONNX protobuf schema (onnx/onnx.proto, proto2) that a UNet file needs,
 * with the official field numbers, so the exporter and importer need no generated code and
 * no `onnx` package. Only messages and fields we write or read are declared; a decoder
 * skips the rest of a foreign file as unknown fields.
 *
 * The plain-object interfaces mirror protobufjs's camelCase view of the messages (int64
 * fields as numbers: every int64 we use is a small dimension, version or attribute).
 *
 * @example
 * const bytes = encodeModel({ irVersion: 8, opsetImport: [{ domain: '', version: 17 }], graph })
 * const model = decodeModel(bytes) // ModelProto, or throws on malformed protobuf
 */
import protobuf from 'protobufjs'

const ONNX_PROTO = `
syntax = "proto2";
package onnx;

message AttributeProto {
  enum AttributeType {
    UNDEFINED = 0; FLOAT = 1; INT = 2; STRING = 3; TENSOR = 4; GRAPH = 5;
    FLOATS = 6; INTS = 7; STRINGS = 8; TENSORS = 9; GRAPHS = 10;
  }
  optional string name = 1;
  optional AttributeType type = 20;
  optional float f = 2;
  optional int64 i = 3;
  optional bytes s = 4;
  repeated float floats = 7;
  repeated int64 ints = 8;
  repeated bytes strings = 9;
}

message ValueInfoProto {
  optional string name = 1;
  optional TypeProto type = 2;
  optional string doc_string = 3;
}

message NodeProto {
  repeated string input = 1;
  repeated string output = 2;
  optional string name = 3;
  optional string op_type = 4;
  optional string domain = 7;
  repeated AttributeProto attribute = 5;
  optional string doc_string = 6;
}

message StringStringEntryProto {
  optional string key = 1;
  optional string value = 2;
}

message GraphProto {
  repeated NodeProto node = 1;
  optional string name = 2;
  repeated TensorProto initializer = 5;
  optional string doc_string = 10;
  repeated ValueInfoProto input = 11;
  repeated ValueInfoProto output = 12;
  repeated ValueInfoProto value_info = 13;
}

message TensorProto {
  enum DataType { UNDEFINED = 0; FLOAT = 1; INT64 = 7; }
  repeated int64 dims = 1;
  optional int32 data_type = 2;
  repeated float float_data = 4 [packed = true];
  optional string name = 8;
  optional string doc_string = 12;
  optional bytes raw_data = 9;
}

message TensorShapeProto {
  message Dimension {
    oneof value {
      int64 dim_value = 1;
      string dim_param = 2;
    }
    optional string denotation = 3;
  }
  repeated Dimension dim = 1;
}

message TypeProto {
  message Tensor {
    optional int32 elem_type = 1;
    optional TensorShapeProto shape = 2;
  }
  oneof value {
    Tensor tensor_type = 1;
  }
  optional string denotation = 6;
}

message OperatorSetIdProto {
  optional string domain = 1;
  optional int64 version = 2;
}

message ModelProto {
  optional int64 ir_version = 1;
  repeated OperatorSetIdProto opset_import = 8;
  optional string producer_name = 2;
  optional string producer_version = 3;
  optional string domain = 4;
  optional int64 model_version = 5;
  optional string doc_string = 6;
  optional GraphProto graph = 7;
  repeated StringStringEntryProto metadata_props = 14;
}
`

/** TensorProto.DataType values we use. */
export const DataType = { FLOAT: 1, INT64: 7 } as const

/** AttributeProto.AttributeType values we use. */
export const AttributeType = { FLOAT: 1, INT: 2, STRING: 3, INTS: 7 } as const

export interface AttributeProto {
  readonly name: string
  readonly type: number
  readonly f?: number
  readonly i?: number
  readonly s?: Uint8Array
  readonly ints?: readonly number[]
}

/** Attribute builders: a list of ints, an int, a float, a string. */
export const ints = (name: string, values: readonly number[]): AttributeProto => ({
  name,
  type: AttributeType.INTS,
  ints: values,
})
export const int = (name: string, i: number): AttributeProto => ({
  name,
  type: AttributeType.INT,
  i,
})
export const float = (name: string, f: number): AttributeProto => ({
  name,
  type: AttributeType.FLOAT,
  f,
})
export const string = (name: string, s: string): AttributeProto => ({
  name,
  type: AttributeType.STRING,
  s: new TextEncoder().encode(s),
})

export interface TensorProto {
  readonly name: string
  readonly dims: readonly number[]
  readonly dataType: number
  readonly rawData?: Uint8Array
  readonly floatData?: readonly number[]
}

/** A dimension is a number or a symbolic name (dynamic batch, height, width). */
export interface Dimension {
  readonly dimValue?: number
  readonly dimParam?: string
}

export interface ValueInfoProto {
  readonly name: string
  readonly type: {
    readonly tensorType: {
      readonly elemType: number
      readonly shape: { readonly dim: readonly Dimension[] }
    }
  }
}

export interface NodeProto {
  readonly name: string
  readonly opType: string
  readonly input: readonly string[]
  readonly output: readonly string[]
  readonly attribute?: readonly AttributeProto[]
}

export interface GraphProto {
  readonly name: string
  readonly node: readonly NodeProto[]
  readonly initializer: readonly TensorProto[]
  readonly input: readonly ValueInfoProto[]
  readonly output: readonly ValueInfoProto[]
}

export interface ModelProto {
  readonly irVersion: number
  readonly opsetImport: readonly { readonly domain: string; readonly version: number }[]
  readonly producerName?: string
  readonly producerVersion?: string
  readonly docString?: string
  readonly graph: GraphProto
  readonly metadataProps?: readonly { readonly key: string; readonly value: string }[]
}

/** A float tensor's name and shape, each dim a size or a symbolic name. */
export const tensorInfo = (name: string, dims: readonly (number | string)[]): ValueInfoProto => ({
  name,
  type: {
    tensorType: {
      elemType: DataType.FLOAT,
      shape: {
        dim: dims.map((d): Dimension =>
          typeof d === 'number' ? { dimValue: d } : { dimParam: d },
        ),
      },
    },
  },
})

const modelType = protobuf.parse(ONNX_PROTO, { keepCase: false }).root.lookupType('onnx.ModelProto')

export const encodeModel = (model: ModelProto): Uint8Array =>
  modelType.encode(modelType.fromObject(model)).finish()

/**
 * Bytes to a ModelProto. Throws on bytes that are not a protobuf message (protobufjs's own
 * error); a message that is protobuf but not a usable model is for the caller to judge.
 */
export const decodeModel = (bytes: Uint8Array): ModelProto =>
  modelType.toObject(modelType.decode(bytes), {
    longs: Number,
    arrays: true,
    defaults: false,
  }) as ModelProto

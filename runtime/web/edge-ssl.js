// edge-ssl in the browser: classify images with a file written by `edge-ssl export`, through
// onnxruntime-web. The page passes in the `ort` namespace it imported, so it chooses the build
// (WASM, WebGPU) and where it comes from (a local copy or a CDN).
//
//   import * as ort from "onnxruntime-web";
//   import { loadModel } from "./edge-ssl.js";
//   const model = await loadModel(ort, "classifier.onnx");
//   const { label, confidence, topK } = await model.classify(imgOrCanvasOrImageData);

export const INPUT_NAME = "image";
export const OUTPUT_NAME = "probabilities";
const META = "edge_ssl.";

// onnxruntime-web does not expose a model's metadata_props, so they are read from the file's
// protobuf directly: ModelProto field 14, each a StringStringEntryProto {1: key, 2: value}.
// Written by hand (a protobuf library would be 100 kB for two fields).
export function readMetadata(bytes) {
  const entries = {};
  for (const [field, value] of protoFields(bytes)) {
    if (field !== 14) continue;
    const pair = {};
    for (const [inner, text] of protoFields(value)) pair[inner] = new TextDecoder().decode(text);
    if (pair[1]?.startsWith(META)) entries[pair[1]] = JSON.parse(pair[2]);
  }
  return entries;
}

function* protoFields(bytes) {
  let at = 0;
  const varint = () => {
    let result = 0, shift = 1;
    for (;;) {
      const byte = bytes[at++];
      if (byte === undefined) throw new Error("truncated protobuf");
      result += (byte & 0x7f) * shift;  // no bit operators: lengths can pass 2^31
      if (byte < 0x80) return result;
      shift *= 128;
    }
  };
  while (at < bytes.length) {
    const key = varint(), field = Math.floor(key / 8), wire = key % 8;
    if (wire === 0) { varint(); continue; }
    if (wire === 1) { at += 8; continue; }
    if (wire === 5) { at += 4; continue; }
    if (wire !== 2) throw new Error(`unexpected protobuf wire type ${wire}`);
    const length = varint();
    if (at + length > bytes.length) throw new Error("truncated protobuf");
    yield [field, bytes.subarray(at, at + length)];
    at += length;
  }
}

// Load an exported file (a URL or its bytes). Fixed-size files (no Resize) can run on WebGPU,
// which refuses the any-size file's antialiased Resize: they get ["webgpu", "wasm"] where the
// browser has WebGPU; any-size files get ["wasm"].
export async function loadModel(ort, source, { executionProviders, name } = {}) {
  const label = name ?? (typeof source === "string" ? source : "the model");
  const bytes = typeof source === "string"
    ? new Uint8Array(await (await fetchOk(source)).arrayBuffer()) : source;
  let meta;
  try {
    meta = readMetadata(bytes);
  } catch (error) {
    throw new Error(`${label} is not an ONNX file (${error.message}); use a .onnx file written by edge-ssl export`);
  }
  if (!(`${META}task` in meta)) {
    throw new Error(`${label} has no edge-ssl metadata; use a .onnx file written by edge-ssl export`);
  }
  const fixed = meta[`${META}input`] === "fixed";
  const providers = executionProviders
    ?? (fixed && globalThis.navigator?.gpu ? ["webgpu", "wasm"] : ["wasm"]);
  const session = await ort.InferenceSession.create(bytes, { executionProviders: providers });
  return new Model(ort, session, meta, providers);
}

async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}; is the model file beside the page?`);
  return response;
}

// RGB bytes of an ImageData, alpha dropped: the uint8 [H, W, 3] the model takes.
export function rgbOf(imageData) {
  const { data, width, height } = imageData;
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < data.length; i += 4, j += 3) {
    rgb[j] = data[i]; rgb[j + 1] = data[i + 1]; rgb[j + 2] = data[i + 2];
  }
  return rgb;
}

// The pixels of an <img>, <canvas>, ImageBitmap or ImageData, scaled to size × size when a size
// is given (the canvas's own smoothing: close to, not exactly, the Python runtime's resize).
export function imageDataOf(source, size) {
  if (typeof ImageData !== "undefined" && source instanceof ImageData && !size) return source;
  const width = source.naturalWidth ?? source.width, height = source.naturalHeight ?? source.height;
  const canvas = new OffscreenCanvas(size ?? width, size ?? height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.imageSmoothingQuality = "high";
  const drawable = source instanceof ImageData ? imageCanvas(source) : source;
  context.drawImage(drawable, 0, 0, canvas.width, canvas.height);
  return context.getImageData(0, 0, canvas.width, canvas.height);
}

function imageCanvas(imageData) {
  const canvas = new OffscreenCanvas(imageData.width, imageData.height);
  canvas.getContext("2d").putImageData(imageData, 0, 0);
  return canvas;
}

class Model {
  constructor(ort, session, meta, executionProviders) {
    this.ort = ort;
    this.session = session;
    this.metadata = meta;
    this.task = meta[`${META}task`];
    this.labels = meta[`${META}labels`];
    this.imageSize = meta[`${META}image_size`];
    this.input = meta[`${META}input`] ?? "any";
    this.precision = meta[`${META}precision`] ?? null;
    this.executionProviders = executionProviders;
  }

  // Label, confidence, the topK ranking and every probability of one image. Any-size files
  // take the image as it is (the graph resizes); fixed-size ones need imageSize × imageSize.
  async classify(source, { topK = 3 } = {}) {
    const fixed = this.input === "fixed";
    const width = source.naturalWidth ?? source.width, height = source.naturalHeight ?? source.height;
    const needsResize = fixed && (width !== this.imageSize || height !== this.imageSize);
    const pixels = imageDataOf(source, needsResize ? this.imageSize : undefined);
    const tensor = new this.ort.Tensor("uint8", rgbOf(pixels), [1, pixels.height, pixels.width, 3]);
    const output = await this.session.run({ [INPUT_NAME]: tensor });
    const probabilities = Array.from(output[OUTPUT_NAME].data);
    // Stable: ties keep label order, as the Python runtime's ranking does.
    const ranking = probabilities.map((p, i) => i).sort((a, b) => probabilities[b] - probabilities[a] || a - b);
    const top = ranking.slice(0, Math.min(topK, this.labels.length))
      .map((i) => ({ label: this.labels[i], probability: probabilities[i] }));
    return { label: top[0].label, confidence: top[0].probability, topK: top, probabilities };
  }
}

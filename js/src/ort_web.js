// ONNX Runtime Web (WASM; WebGPU where present) for browsers: "#ort" maps here by default.
import * as ort from 'onnxruntime-web';

export default ort;
/** Sessions are created from checked bytes, external data handed over by location. */
export const platform = 'web';

// ONNX Runtime for Node (package.json "imports" maps "#ort" here under the "node" condition).
import * as ort from 'onnxruntime-node';

export default ort;
/** Sessions are created from the checked files' paths (the CPU provider reads a graph's external data itself). */
export const platform = 'node';

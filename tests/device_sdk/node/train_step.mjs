// Fine-tunes a bundle's head with its ONNX train-step graph in Node.js (onnxruntime-node), as a
// React Native or Electron app would: no Python, no training build of onnxruntime.
//
//   node train_step.mjs BUNDLE/train_step.onnx job.json result.json
//
// job.json: {"runs": [{"inputs": {name: tensor}, "batches": [{"features": tensor, "labels": tensor}]}]}
// where a tensor is {"dtype": "float32" | "int32", "dims": [...], "data": [...]}; `inputs` holds the
// start state (weight, bias, m_*, v_*, step) and the hyper-parameters. Each step feeds the outputs
// new_<name> back as the next step's <name> (the manifest's fine_tuning.train_step contract).
// result.json: {"versions": ..., "runs": [{"losses": [...], "state": {name: tensor}}]}.
import { readFileSync, writeFileSync } from "node:fs";
import ort from "onnxruntime-node";

const ARRAYS = { float32: Float32Array, int32: Int32Array };
const toTensor = ({ dtype, dims, data }) => new ort.Tensor(dtype, ARRAYS[dtype].from(data), dims);
const toJson = (t) => ({ dtype: t.type, dims: t.dims, data: Array.from(t.data) });
const mapValues = (object, f) => Object.fromEntries(Object.entries(object).map(([k, v]) => [k, f(v, k)]));

async function fineTune(session, run) {
  const inputs = mapValues(run.inputs, toTensor);
  const updated = session.outputNames.filter((n) => n.startsWith("new_")).map((n) => n.slice(4));
  const losses = [];
  for (const batch of run.batches) {
    const out = await session.run({ ...inputs, ...mapValues(batch, toTensor) });
    losses.push(out.loss.data[0]);
    for (const name of updated) inputs[name] = out[`new_${name}`];
  }
  const state = Object.fromEntries(updated.map((name) => [name, toJson(inputs[name])]));
  return { losses, state };
}

const [modelPath, jobPath, resultPath] = process.argv.slice(2);
const job = JSON.parse(readFileSync(jobPath, "utf8"));
const session = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: 1 });
const runs = [];
for (const run of job.runs) runs.push(await fineTune(session, run));
writeFileSync(resultPath, JSON.stringify({ versions: ort.env.versions, runs }));

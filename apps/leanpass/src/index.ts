export { main, pipelineJsonSchema, type Io } from './main.js';
export { EXIT } from './errors.js';
export { findPassPackages, installedPasses, loadPassPackages, findPass, benchFunctions, type InstalledPass, type FoundPackage } from './discover.js';
export { renderHtml, summaryTable, readCliReport, cliReportSchema, type CliReport } from './report.js';
export {
  DataCache,
  calibrationFor,
  evaluateHost,
  dataActions,
  hostKind,
  calibrateOptions,
  evaluateOptions,
  HOST_KINDS,
  DLLM_TASKS,
  DLLM_RANGES,
  DLLM_BLOCK,
  type HostKind,
  type CalibrateOptions,
  type EvaluateOptions,
} from './actions.js';

export { main, pipelineJsonSchema, type Io } from './main.js';
export { EXIT } from './errors.js';
export { findPassPackages, installedPasses, loadPassPackages, findPass, benchFunctions, type InstalledPass, type FoundPackage } from './discover.js';
export { renderHtml, summaryTable, readCliReport, cliReportSchema, type CliReport } from './report.js';

/** The agent's status page: request history, `/status` data, the page, and `/debug/measure`. */
export {
  describePolicy,
  type StatusData,
  type StatusPinner,
  type StatusPolicy,
  type StatusResolution,
} from './data.ts';
export {
  createRequestHistory,
  type MirrorSummary,
  type OutcomeCounts,
  type RequestHistory,
  type RequestHistoryOptions,
  type StatusRequest,
} from './history.ts';
export {
  createMeasurer,
  type LookupResult,
  MeasureBusyError,
  type MeasureResult,
  type MeasureRow,
  type Measurer,
  type MeasurerOptions,
  type PullResult,
  parseMeasureReference,
} from './measure.ts';
export { renderMeasurePage, renderStatusBody, renderStatusPage, type StatusPageOptions } from './render.ts';
export {
  createStatusSource,
  localRegistryUrl,
  registerStatusRoutes,
  type StatusRoutesOptions,
  type StatusSourceOptions,
} from './routes.ts';

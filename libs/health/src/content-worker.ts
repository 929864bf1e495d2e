// The content-match worker thread: runs http-content regexes off the controller's event loop, each under its time
// limit, and reports what each cost. Shell layer of libs/health (the thread's entry point; see content-matcher.ts).
import { parentPort } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { compiledContentRegex, matchBounded } from './content-match';

// V8 interprets a regex the first time it runs and compiles it only then: the first match of each pattern ran 8
// times slower (20 ms against 2.5 ms for (a+)+$ on 19 characters), enough to meet the limit on a page the pattern
// handles in time once compiled. Compiled from the first run, a check's cost is what it will be every time.
setFlagsFromString('--no-regexp-tier-up');

export interface ContentJob {
  id: number;
  regex: string;
  body: string;
  limitMs: number;
}
export interface ContentAnswer {
  id: number;
  result: boolean | 'timeout' | 'error';
  /** Wall time the match took in this thread (ms). */
  ms: number;
}

parentPort?.on('message', (job: ContentJob) => {
  const t0 = performance.now();
  let result: ContentAnswer['result'];
  try {
    result = matchBounded(compiledContentRegex(job.regex), job.body, job.limitMs);
  } catch {
    result = 'error';
  }
  parentPort!.postMessage({ id: job.id, result, ms: performance.now() - t0 } satisfies ContentAnswer);
});

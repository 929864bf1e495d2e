// Content matching for http-content checks with a bounded cost: the regex runs under a time limit; pure layer of
// libs/health (no I/O; the limit is V8's own interrupt).
import { createContext, Script } from 'node:vm';

/** The longest one regex match may run on the event loop. */
export const REGEX_LIMIT_MS = 20;

/** Compiles a check's regex; throws a SyntaxError naming the problem (config validation calls this). */
export function compileContentRegex(src: string): RegExp {
  return new RegExp(src);
}

const compiledCache = new Map<string, RegExp>();
/** A check's regex compiled once per process (validation already refused the ones that do not compile). */
export function compiledContentRegex(src: string): RegExp {
  let re = compiledCache.get(src);
  if (!re) {
    if (compiledCache.size > 1000) compiledCache.clear();
    compiledCache.set(src, (re = compileContentRegex(src)));
  }
  return re;
}

const context = createContext({ re: /x/, text: '' });
const test = new Script('re.test(text)');

/**
 * true/false, or 'timeout' when the match ran longer than `limitMs`. Why a vm with a timeout: the body comes from
 * the backend, and a pattern like (a+)+$ against a crafted page backtracks for seconds, stalling every probe, the
 * API and the reconciler on this event loop. V8 interrupts a running regex when the vm's timeout fires.
 */
export function matchBounded(re: RegExp, text: string, limitMs = REGEX_LIMIT_MS): boolean | 'timeout' {
  context.re = re;
  context.text = text;
  try {
    return test.runInContext(context, { timeout: limitMs }) === true;
  } catch (e) {
    if ((e as { code?: string }).code === 'ERR_SCRIPT_EXECUTION_TIMEOUT') return 'timeout';
    throw e;
  } finally {
    context.text = '';
  }
}

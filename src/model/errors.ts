/**
 * Error classes with stable `name` and `code` so callers, logs and tests can tell failures
 * apart without parsing messages.
 */

/** An invalid setting; the message is one line naming the setting and the expected form. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly code = 'T1612D_CONFIG';
  constructor(
    readonly setting: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A Falco event that cannot be normalised; the source counts it as `kind="invalid"`. */
export class InvalidEventError extends Error {
  override readonly name = 'InvalidEventError';
  readonly code = 'T1612D_INVALID_EVENT';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** An operation attempted on a component that is closing or closed. */
export class ClosedError extends Error {
  override readonly name = 'ClosedError';
  readonly code = 'T1612D_CLOSED';
  constructor(what: string) {
    super(`${what} is closed`);
  }
}

/**
 * Short, single-line description of any thrown value, for expected failures (a refused
 * connection, an invalid event) and error messages. Unexpected errors are logged whole instead
 * (`logger.error({ err }, …)`: pino's `err` serializer keeps the type and the stack).
 */
export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message.split('\n')[0] || err.name;
  return String(err);
}

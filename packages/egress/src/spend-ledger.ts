import {
  apiOfCall,
  costOfCall,
  usageReaderFor,
  type CallReading,
  type MeteredCallKind,
  type ModelApi,
  type PriceOverrides,
  type UsageReader,
} from './spend.js';

/**
 * A box's model spend while budgets are open on it (a task's `maxSpendUsd`, or a count with no
 * limit). Every metered call of the box is charged to every budget open at the time: the gateway
 * sees connections, not which process in the box made them, so tasks sharing a box share their
 * spend, which can only stop one early, never let one spend more.
 *
 * A call is charged as its answer streams (the prompt on `message_start`, the output as it
 * grows), so a budget is passed mid-answer, not after it: calls then in flight are cut, and later
 * ones refused (see tls-intercept.ts). A successful answer whose cost cannot be read passes every
 * budget (fail closed).
 *
 * Every call is also charged to the box's account, when the host gives one: what all the boxes
 * of one API key have spent, with the key's cap. A cap reached is a budget passed for each of the
 * key's boxes: their calls in flight are cut, later ones refused, their tasks' budgets end.
 */

/** Why a budget ended: its own limit, a cost that could not be read, or its key's cap. */
export type BudgetEnd = 'spent' | 'unreadable' | 'account';

/** What every box of one API key has spent, and the cap on it (Infinity: none); host-kept. */
export interface SpendAccount {
  readonly limitUsd: number;
  readonly spentUsd: number;
  /** When the count started (it may be started again, e.g. for a new billing period). */
  readonly since?: number;
  charge(usd: number): void;
}

export interface SpendBudget {
  /** Infinity for a count without a limit. */
  readonly limitUsd: number;
  /** What the box's model calls cost while this budget was open, as the API reported it. */
  readonly spentUsd: number;
  /** Why the budget is past, once it is. */
  readonly exceeded: BudgetEnd | undefined;
  /** Stops counting; the budget's figures stay readable. */
  close(): void;
}

export interface OpenBudgetOptions {
  /** Default Infinity: count only. */
  readonly limitUsd?: number;
  /** Called once, when the budget is passed. */
  readonly onExceeded?: (budget: SpendBudget) => void;
  /** What an earlier count of the same budget reached (a task taken up by a restarted daemon). */
  readonly spentUsd?: number;
  /** Called each time a call's cost is counted: a caller keeps the figure. */
  readonly onCharge?: (budget: SpendBudget) => void;
}

class Budget implements SpendBudget {
  exceeded: BudgetEnd | undefined;
  constructor(
    readonly limitUsd: number,
    public spentUsd: number,
    readonly onExceeded: ((budget: SpendBudget) => void) | undefined,
    readonly onCharge: ((budget: SpendBudget) => void) | undefined,
    readonly close: () => void,
  ) {}
}

export class SpendLedger {
  readonly #budgets = new Set<Budget>();
  readonly #calls = new Set<MeteredCall>();

  readonly #onIdle: () => void;
  readonly #account: () => SpendAccount | undefined;
  readonly #onAccountPassed: () => void;
  /**
   * A call's cost could not be read while the account had a cap: the box spends no more until the
   * operator acts on the key (changes its cap or starts its count again), the account as it was then.
   */
  #accountLocked: { limitUsd: number; since: number | undefined } | undefined;
  /** The operator's prices, ahead of the built-in table. */
  readonly prices: PriceOverrides | undefined;

  /**
   * `onIdle`: the last open budget was closed. `account`: the box's key's account, read at each
   * use (its cap can change while the box runs).
   */
  constructor(
    options: {
      onIdle?: () => void;
      prices?: PriceOverrides;
      account?: () => SpendAccount | undefined;
      /** This box's charge took the account past its cap: the key's other boxes must hear of it. */
      onAccountPassed?: () => void;
    } = {},
  ) {
    this.#onIdle = options.onIdle ?? (() => undefined);
    this.#account = options.account ?? (() => undefined);
    this.#onAccountPassed = options.onAccountPassed ?? (() => undefined);
    this.prices = options.prices;
  }

  /** Ends what this box has in flight and open if its key's account is past its cap (see onAccountPassed). */
  checkAccount(): void {
    const account = this.#cappedAccount();
    if (account && account.spentUsd >= account.limitUsd) this.#passAll('account');
  }

  openBudget(options: OpenBudgetOptions = {}): SpendBudget {
    const limit = options.limitUsd ?? Infinity;
    if (!(limit >= 0)) throw new RangeError('a budget limit is a non-negative number');
    const spent = options.spentUsd ?? 0;
    if (!(spent >= 0)) throw new RangeError('what a budget spent is a non-negative number');
    const budget: Budget = new Budget(limit, spent, options.onExceeded, options.onCharge, () => {
      if (this.#budgets.delete(budget) && this.#budgets.size === 0) this.#onIdle();
    });
    this.#budgets.add(budget);
    // Taken up past its limit already: it refuses what it would have refused before.
    if (spent > 0 && spent >= limit) this.#pass(budget, 'spent');
    return budget;
  }

  /** No budget is open (nothing to count for). */
  get idle(): boolean {
    return this.#budgets.size === 0;
  }

  /** A budget with a limit is open, or the key has a cap: calls the gateway cannot price are refused. */
  get limited(): boolean {
    for (const budget of this.#budgets) if (Number.isFinite(budget.limitUsd)) return true;
    return this.#cappedAccount() !== undefined;
  }

  /** The open budget (or the key's account) that is past, if any: the box's next model call is refused. */
  exceededBudget(): SpendBudget | undefined {
    // A budget ended by the key's cap refuses through the account below (which may since be raised).
    for (const budget of this.#budgets) if (budget.exceeded && budget.exceeded !== 'account') return budget;
    const account = this.#cappedAccount();
    if (account === undefined) return undefined;
    const figures = { limitUsd: account.limitUsd, spentUsd: account.spentUsd, close: () => undefined };
    const locked = this.#accountLocked;
    if (locked && account.limitUsd === locked.limitUsd && account.since === locked.since)
      return { ...figures, exceeded: 'unreadable' };
    this.#accountLocked = undefined;
    return account.spentUsd >= account.limitUsd ? { ...figures, exceeded: 'account' } : undefined;
  }

  #cappedAccount(): SpendAccount | undefined {
    const account = this.#account();
    return account && Number.isFinite(account.limitUsd) ? account : undefined;
  }

  /** Starts metering one admitted call. */
  startCall(kind: MeteredCallKind): MeteredCall {
    const call = new MeteredCall(this, kind);
    this.#calls.add(call);
    return call;
  }

  /** @internal */
  charge(usd: number): void {
    if (!(usd > 0)) return;
    const passed: Budget[] = [];
    for (const budget of this.#budgets) {
      budget.spentUsd += usd;
      budget.onCharge?.(budget);
      if (budget.spentUsd >= budget.limitUsd && !budget.exceeded) passed.push(budget);
    }
    if (passed.length > 0) {
      this.#cutCalls();
      for (const budget of passed) this.#pass(budget, 'spent');
    }
    const account = this.#account();
    if (account === undefined) return;
    const before = account.spentUsd;
    account.charge(usd);
    if (account.spentUsd < account.limitUsd) return;
    this.#passAll('account');
    if (before < account.limitUsd) this.#onAccountPassed();
  }

  /** @internal: a call spent an amount that cannot be read; every limited budget is past. */
  unreadable(): void {
    const account = this.#cappedAccount();
    if (account !== undefined) {
      // The key's cap cannot be held: every budget ends, not only the limited ones.
      this.#accountLocked = { limitUsd: account.limitUsd, since: account.since };
      this.#passAll('unreadable');
      return;
    }
    const limited = [...this.#budgets].filter((b) => Number.isFinite(b.limitUsd) && !b.exceeded);
    if (limited.length > 0) this.#cutCalls();
    for (const budget of limited) this.#pass(budget, 'unreadable');
  }

  /** The key's cap is reached (or cannot be held): every call in flight is cut, every budget ends. */
  #passAll(why: BudgetEnd): void {
    this.#cutCalls();
    for (const budget of [...this.#budgets]) this.#pass(budget, why);
  }

  /** Every call in flight stops spending now: the model stops generating when its caller goes. */
  #cutCalls(): void {
    for (const call of [...this.#calls]) call.cut();
  }

  /** @internal */
  ended(call: MeteredCall): void {
    this.#calls.delete(call);
  }

  /** Ends a budget (once) and tells its owner; the calls in flight are cut by the caller. */
  #pass(budget: Budget, why: BudgetEnd): void {
    if (budget.exceeded) return;
    budget.exceeded = why;
    budget.onExceeded?.(budget);
  }
}

/**
 * One model call being answered: fed the upstream's status and body, charges the ledger as
 * the cost it reads grows. The forwarder keeps reading the upstream after the box hangs up for as
 * long as `wantsUsage` (a box must not spend a prompt by hanging up before it is priced).
 */
export class MeteredCall {
  #reader: UsageReader | undefined;
  #status: number | undefined;
  #charged = 0;
  #ended = false;
  #cut: (() => void) | undefined;
  #cutRequested = false;

  readonly api: ModelApi;

  constructor(
    readonly ledger: SpendLedger,
    readonly kind: MeteredCallKind,
  ) {
    this.api = apiOfCall(kind);
  }

  /** How the forwarder ends the exchange, both sides, when a budget is passed. */
  onCut(cut: () => void): void {
    this.#cut = cut;
    if (this.#cutRequested) cut();
  }

  /** What this call was charged. */
  get costUsd(): number {
    return this.#charged;
  }

  response(status: number, contentType: string | undefined): void {
    this.#status = status;
    // The API bills successful calls only; an error's body has no usage to read.
    if (status >= 200 && status < 300) this.#reader = usageReaderFor(this.kind, contentType);
  }

  data(chunk: Buffer): void {
    if (this.#ended || !this.#reader) return;
    this.#reader.push(chunk);
    const reading = this.#reader.reading();
    // The final counts are in: generation is over, so a limit this charge passes has nothing
    // left to save by cutting this answer (its last bytes are on their way).
    if (reading.final) this.ledger.ended(this);
    this.#chargeUpTo(reading);
  }

  /** The call can still spend without the ledger knowing what (no answer yet, or no usage in it). */
  get wantsUsage(): boolean {
    if (this.#ended) return false;
    if (this.#status === undefined) return true;
    return this.#reader !== undefined && !this.#reader.reading().usageSeen;
  }

  /**
   * The exchange is over. `sent`: the request reached the upstream whole, so it may have been
   * billed; a billable call whose cost was never read passes every limited budget.
   */
  end(sent: boolean): void {
    if (this.#ended) return;
    // Out of the calls in flight first: an answer already whole is not cut by its own charge.
    this.#ended = true;
    this.ledger.ended(this);
    const reading = this.#reader?.end();
    if (reading) this.#chargeUpTo(reading);
    // A call the gateway cut (a limit passed) ended for a known reason, read or not.
    if (this.#cutRequested) return;
    const unknownAnswer = this.#status === undefined && sent;
    const unreadAnswer = reading !== undefined && !reading.usageSeen && !reading.failed;
    if (unknownAnswer || unreadAnswer) this.ledger.unreadable();
  }

  cut(): void {
    this.#cutRequested = true;
    this.#cut?.();
  }

  #chargeUpTo(reading: CallReading): void {
    const cost = costOfCall(reading.model, reading.usage, this.ledger.prices, this.api);
    if (cost <= this.#charged) return;
    const delta = cost - this.#charged;
    this.#charged = cost;
    this.ledger.charge(delta);
  }
}

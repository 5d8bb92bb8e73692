/** Per-phase wall times, printed to stderr when AGENTBOX_PROFILE=1. */
export class PhaseTimer {
  private readonly phases: { name: string; ms: number }[] = [];
  private current: { name: string; start: number } | undefined;
  private readonly notes: string[] = [];

  constructor(private readonly enabled = process.env.AGENTBOX_PROFILE === '1') {}

  phase(name: string): void {
    this.end();
    this.current = { name, start: performance.now() };
  }

  /** A fact about the run printed after the times (e.g. start=clone). */
  note(name: string, value: string): void {
    this.notes.push(`${name}=${value}`);
  }

  end(): void {
    if (!this.current) return;
    this.phases.push({ name: this.current.name, ms: performance.now() - this.current.start });
    this.current = undefined;
  }

  report(stream: NodeJS.WritableStream = process.stderr): void {
    this.end();
    if (!this.enabled) return;
    const total = this.phases.reduce((n, p) => n + p.ms, 0);
    const parts = this.phases.map((p) => `${p.name}=${p.ms.toFixed(0)}ms`);
    const notes = this.notes.map((n) => ` ${n}`).join('');
    stream.write(`agentbox profile: ${parts.join(' ')} total=${total.toFixed(0)}ms${notes}\n`);
  }
}

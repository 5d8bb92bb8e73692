import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { hostTscKhz } from '../../src/qemu/accel.js';
import { QemuBackend } from '../../src/qemu/driver.js';
import { trimConsoleLog } from '../../src/qemu/console-log.js';
import { processesMentioning } from '../../src/qemu/proc.js';
import { bootBox, destroyAll, leftovers, run, sharedRuntime } from '../../../../test/helpers.js';

describe('real VMs: failures are clear errors, never hangs, and nothing is left behind', () => {
  afterAll(destroyAll);

  it('runs 3 boxes at once, each its own machine (boot id, machine-id, hostname)', async () => {
    const boxes = await Promise.all([bootBox(), bootBox(), bootBox()]);
    const identities = await Promise.all(
      boxes.map(async (vm) => {
        const script = 'cat /proc/sys/kernel/random/boot_id /etc/machine-id; hostname; cat /etc/hostname';
        const [bootId, machineId, hostname, hostnameFile] = (await run(vm, script)).stdout
          .toString()
          .trim()
          .split('\n');
        // A cold boot is named by its id, as a clone is.
        expect([hostname, hostnameFile]).toEqual([vm.id, vm.id]);
        expect(machineId).toMatch(/^[0-9a-f]{32}$/);
        return { bootId, machineId };
      }),
    );
    expect(new Set(identities.map((i) => i.bootId)).size).toBe(3);
    expect(new Set(identities.map((i) => i.machineId)).size).toBe(3);
    await Promise.all(boxes.map((vm) => vm.destroy()));
    for (const vm of boxes) expect(leftovers(vm.id)).toEqual({ processes: [], files: false });
  });

  it('fails an exec in flight with vm_exited when the VM is killed, and the box leaves nothing', async () => {
    const vm = await bootBox();
    const pending = run(vm, 'sleep 300');
    await new Promise((r) => setTimeout(r, 500));
    process.kill(vm.pid!, 'SIGKILL');
    await expect(pending).rejects.toMatchObject({ code: 'vm_exited' });
    await expect(vm.guest.ping()).rejects.toMatchObject({ code: 'vm_exited' });
    expect(vm.state).toBe('stopped');
    await vm.destroy();
    expect(leftovers(vm.id)).toEqual({ processes: [], files: false });
  });

  it('fails calls in flight with guest_agent_restarted when the agent crashes, then works again', async () => {
    const vm = await bootBox();
    const firstAgent = vm.guest.info!.agentPid;
    const pending = run(vm, 'sleep 300');
    await new Promise((r) => setTimeout(r, 500));
    // The agent is PID `agentPid`; kill it from inside the box the way a crash would end it.
    void run(vm, `kill -KILL ${firstAgent}`).catch(() => undefined);
    await expect(pending).rejects.toMatchObject({ code: 'guest_agent_restarted' });
    const hello = await vm.guest.waitForHello();
    expect(hello.agentPid).not.toBe(firstAgent);
    expect(hello.bootId).toBeDefined();
    expect((await run(vm, 'echo back')).stdout.toString()).toBe('back\n');
  });

  it('reads a root process that takes the guest port and floods it at the host’s pace; the agent then takes it back', async () => {
    const vm = await bootBox();
    const firstAgent = vm.guest.info!.agentPid;
    // What a hostile root in the box can do: kill the agent, open its port, greet the host and send
    // tiny frames for a channel no one has, as fast as the port takes them, for 3 s.
    const flood = [
      'import glob, json, os, struct, time',
      "dev = [p for p in glob.glob('/sys/class/virtio-ports/*') if open(p + '/name').read().strip() == 'agentbox.0'][0]",
      `os.kill(${firstAgent}, 9)`,
      'end = time.time() + 10',
      'while True:',
      '    try:',
      "        fd = os.open('/dev/' + os.path.basename(dev), os.O_WRONLY); break",
      '    except OSError:',
      '        if time.time() > end: raise',
      '        time.sleep(0.001)',
      "hello = json.dumps({'type': 'hello', 'protocolVersion': 1, 'imageApiVersion': 1, 'agentVersion': 'x', 'bootId': 'b', 'agentPid': 99, 'egressProxyPort': 3128}).encode()",
      "os.write(fd, struct.pack('>BBII', 0xab, 1, 0, len(hello)) + hello)",
      "junk = struct.pack('>BBII', 0xab, 2, 7, 1) + b'x'",
      'end = time.time() + 3',
      'while time.time() < end:',
      '    os.write(fd, junk * 6000)',
    ].join('\n');
    await vm.guest.writeFile('/root/flood.py', Buffer.from(flood));
    void run(vm, 'setsid nohup python3 /root/flood.py >/root/flood.log 2>&1 &').catch(() => undefined);
    await expect.poll(() => vm.guest.limits.readPauses, { timeout: 20_000 }).toBeGreaterThan(0);
    // Once it exits, init starts the agent again, which opens the port and says hello. Until then
    // the host knows no agent (undefined) or the flooder (99): a call sent meanwhile would reach
    // the flooder, which never answers, and fail when it closes the port.
    await expect
      .poll(() => vm.guest.info?.agentPid, { timeout: 30_000, interval: 200 })
      .toSatisfy((pid) => pid !== undefined && pid !== firstAgent && pid !== 99);
    expect((await run(vm, 'echo back; cat /root/flood.log')).stdout.toString()).toBe('back\n');
    await vm.destroy();
  });

  it('keeps a flooded serial console short: QEMU appends, so it is cut in place', async () => {
    const vm = await bootBox();
    const rt = await sharedRuntime();
    const file = path.join(rt.backend.boxDir(vm.id), 'console.log');
    // Root in the box writes to its console (what a flood would do, briefly).
    await run(vm, 'for i in $(seq 1 2000); do echo "flood line $i"; done > /dev/ttyS0');
    await expect.poll(() => fs.readFileSync(file, 'utf8')).toContain('flood line 2000');
    expect(trimConsoleLog(file, 1024, 100)).toBe(true);
    await run(vm, 'echo after-the-cut > /dev/ttyS0');
    await expect.poll(() => fs.readFileSync(file, 'utf8')).toContain('after-the-cut');
    // Dense and short: written at the end of the cut file, not at QEMU's old offset.
    expect(fs.statSync(file).size).toBeLessThan(1024);
    expect(fs.readFileSync(file, 'utf8')).not.toContain('\0');
    await vm.destroy();
  });

  it('stops a box gracefully', async () => {
    const vm = await bootBox();
    await vm.guest.writeFile('/root/keep.txt', Buffer.from('kept'));
    await vm.stop();
    expect(vm.state).toBe('stopped');
    await expect(vm.stop()).rejects.toMatchObject({ code: 'invalid_state' });
    await vm.destroy();
    expect(vm.state).toBe('destroyed');
  });

  it('aborting a template build (a daemon stopping) kills its VM and leaves no build behind', async () => {
    const rt = await sharedRuntime();
    // Its own home: a template store where this size is surely not built yet.
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-abort-build-'));
    const backend = new QemuBackend({
      home,
      accel: rt.accel.accel,
      tscKhz: rt.accel.accel === 'tcg' ? hostTscKhz() : undefined,
    });
    let booting!: () => void;
    const booted = new Promise<void>((r) => (booting = r));
    const build = backend.ensureTemplate(rt.image, { memoryMib: 512, vcpus: 1, diskGib: 2 }, (step) => {
      if (step.index === 2) booting();
    });
    build.catch(() => undefined);
    await booted;
    await new Promise((r) => setTimeout(r, 300));
    expect(processesMentioning(home)).toHaveLength(1);
    await backend.abortTemplateBuilds();
    await expect(build).rejects.toThrow();
    expect(processesMentioning(home)).toEqual([]);
    expect(fs.readdirSync(path.join(home, 'templates')).filter((f) => f.includes('.build-'))).toEqual([]);
    fs.rmSync(home, { recursive: true, force: true });
  });
});

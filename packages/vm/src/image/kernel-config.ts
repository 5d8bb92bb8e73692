/**
 * The guest kernel's configuration: applied to `make tinyconfig` of Debian's linux-source, so the
 * kernel holds exactly this and what it depends on. Everything a box uses is built in (no
 * modules: loading ext4 & co. from an initramfs cost ~0.7 s of every boot under emulation), and
 * nothing for hardware a microVM does not have. Every `=y` here is checked after `olddefconfig`;
 * one that did not take fails the build. Changing this text builds a new kernel and image.
 *
 * What boxes run: Debian userland, compilers, git, node, python, Bun-based agent CLIs, tools that
 * use namespaces/seccomp (bubblewrap, browsers), host mounts over 9p or virtiofs, overlays.
 */
export const KERNEL_CONFIG = `
# --- identity
CONFIG_LOCALVERSION="-agentbox"
CONFIG_DEFAULT_HOSTNAME="agentbox"

# --- core: what a general-purpose userland expects of its kernel
CONFIG_64BIT=y
CONFIG_SMP=y
CONFIG_NR_CPUS=64
CONFIG_MULTIUSER=y
CONFIG_SYSVIPC=y
CONFIG_POSIX_MQUEUE=y
CONFIG_CROSS_MEMORY_ATTACH=y
CONFIG_FHANDLE=y
CONFIG_NO_HZ_IDLE=y
CONFIG_HIGH_RES_TIMERS=y
CONFIG_PREEMPT_VOLUNTARY=y
CONFIG_HZ_250=y
CONFIG_PRINTK=y
CONFIG_BUG=y
CONFIG_COREDUMP=y
CONFIG_ELF_CORE=y
CONFIG_BASE_FULL=y
CONFIG_FUTEX=y
CONFIG_EPOLL=y
CONFIG_SIGNALFD=y
CONFIG_TIMERFD=y
CONFIG_EVENTFD=y
CONFIG_SHMEM=y
CONFIG_AIO=y
CONFIG_IO_URING=y
CONFIG_ADVISE_SYSCALLS=y
CONFIG_MEMBARRIER=y
CONFIG_KALLSYMS=y
CONFIG_RSEQ=y
CONFIG_POSIX_TIMERS=y
CONFIG_FILE_LOCKING=y
CONFIG_SYSFS_SYSCALL=y
CONFIG_USERFAULTFD=y
CONFIG_SWAP=y
CONFIG_BINFMT_ELF=y
CONFIG_BINFMT_SCRIPT=y
CONFIG_BINFMT_MISC=y
CONFIG_IA32_EMULATION=y
CONFIG_SECCOMP=y
CONFIG_SECCOMP_FILTER=y
CONFIG_KEYS=y
CONFIG_CHECKPOINT_RESTORE=y
CONFIG_CGROUPS=y
CONFIG_MEMCG=y
CONFIG_BLK_CGROUP=y
CONFIG_CGROUP_SCHED=y
CONFIG_FAIR_GROUP_SCHED=y
CONFIG_CGROUP_PIDS=y
CONFIG_CGROUP_FREEZER=y
CONFIG_CPUSETS=y
CONFIG_CGROUP_DEVICE=y
CONFIG_CGROUP_CPUACCT=y
CONFIG_NAMESPACES=y
CONFIG_UTS_NS=y
CONFIG_TIME_NS=y
CONFIG_IPC_NS=y
CONFIG_USER_NS=y
CONFIG_PID_NS=y
CONFIG_NET_NS=y
CONFIG_BLK_DEV_INITRD=y
CONFIG_RD_GZIP=y
CONFIG_CC_OPTIMIZE_FOR_PERFORMANCE=y
CONFIG_SLUB=y
CONFIG_MODULES=n
CONFIG_AUDIT=n
CONFIG_SECURITY=n

# --- platform: QEMU microvm / Firecracker: no PCI, no ACPI (devices come on the command line),
# PVH entry so QEMU boots the ELF directly, paravirtual clock on KVM hosts
CONFIG_HYPERVISOR_GUEST=y
CONFIG_PARAVIRT=y
CONFIG_KVM_GUEST=y
CONFIG_PVH=y
CONFIG_PCI=n
CONFIG_ACPI=n
CONFIG_X86_MPPARSE=y
CONFIG_X86_X2APIC=y
CONFIG_X86_TSC=y
CONFIG_HPET_TIMER=y
CONFIG_MTRR=y
CONFIG_X86_PAT=y
CONFIG_RANDOMIZE_BASE=n
CONFIG_SPECULATION_MITIGATIONS=n
CONFIG_NUMA=n
CONFIG_X86_MCE=n
CONFIG_MICROCODE=n
CONFIG_CPU_FREQ=n
CONFIG_SUSPEND=n
CONFIG_HIBERNATION=n
CONFIG_TRANSPARENT_HUGEPAGE=n
CONFIG_KSM=n

# --- devices: virtio over MMIO, a serial console, the RTC; nothing else
CONFIG_BLOCK=y
CONFIG_BLK_DEV=y
CONFIG_VIRTIO_MENU=y
CONFIG_VIRTIO=y
CONFIG_VIRTIO_MMIO=y
CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y
CONFIG_VIRTIO_BLK=y
CONFIG_VIRTIO_CONSOLE=y
CONFIG_VIRTIO_BALLOON=y
CONFIG_HW_RANDOM=y
CONFIG_HW_RANDOM_VIRTIO=y
CONFIG_NETDEVICES=y
CONFIG_NET_CORE=y
CONFIG_VIRTIO_NET=y
CONFIG_TUN=y
CONFIG_VSOCKETS=y
CONFIG_VIRTIO_VSOCKETS=y
CONFIG_TTY=y
CONFIG_UNIX98_PTYS=y
CONFIG_SERIAL_8250=y
CONFIG_SERIAL_8250_CONSOLE=y
CONFIG_RTC_CLASS=y
CONFIG_RTC_DRV_CMOS=y
CONFIG_VT=n
CONFIG_LEGACY_PTYS=n
CONFIG_INPUT=n
CONFIG_SERIO=n
CONFIG_FB=n
CONFIG_DRM=n
CONFIG_SOUND=n
CONFIG_USB_SUPPORT=n
CONFIG_WLAN=n
CONFIG_ETHERNET=n

# --- filesystems: the root disk, tmpfs, host mounts (9p, virtiofs), overlays
CONFIG_EXT4_FS=y
CONFIG_EXT4_FS_POSIX_ACL=y
CONFIG_EXT4_FS_SECURITY=y
CONFIG_TMPFS=y
CONFIG_TMPFS_POSIX_ACL=y
CONFIG_TMPFS_XATTR=y
CONFIG_PROC_FS=y
CONFIG_PROC_SYSCTL=y
CONFIG_SYSFS=y
CONFIG_DEVTMPFS=y
CONFIG_OVERLAY_FS=y
CONFIG_FUSE_FS=y
CONFIG_VIRTIO_FS=y
CONFIG_NET_9P=y
CONFIG_NET_9P_VIRTIO=y
CONFIG_9P_FS=y
CONFIG_9P_FS_POSIX_ACL=y
CONFIG_INOTIFY_USER=y
CONFIG_FANOTIFY=y
CONFIG_DNOTIFY=y
CONFIG_MSDOS_PARTITION=y
CONFIG_NLS=y
CONFIG_NLS_UTF8=y
CONFIG_QUOTA=n

# --- network: loopback for the in-box egress proxy and local servers (no NIC by default)
CONFIG_NET=y
CONFIG_UNIX=y
CONFIG_PACKET=y
CONFIG_INET=y
CONFIG_IPV6=y
CONFIG_IPV6_SIT=n
CONFIG_INET_DIAG=y
CONFIG_NETFILTER=n
CONFIG_WIRELESS=n

# --- crypto the kernel itself uses (ext4 metadata checksums)
CONFIG_CRYPTO=y
CONFIG_CRYPTO_CRC32C=y
CONFIG_CRYPTO_CRC32C_INTEL=y
CONFIG_CRYPTO_MANAGER_DISABLE_TESTS=y

# --- no debugging or tracing machinery (each costs boot time under emulation)
CONFIG_DEBUG_INFO_NONE=y
CONFIG_FTRACE=n
CONFIG_KPROBES=n
CONFIG_PROFILING=n
CONFIG_MAGIC_SYSRQ=n
CONFIG_DEBUG_WX=n
CONFIG_IKCONFIG=n
CONFIG_BSD_PROCESS_ACCT=n
CONFIG_TASKSTATS=n
CONFIG_PSI=n
`;

/** The `CONFIG_X=y` lines of a fragment: what the built kernel must have. */
export function requiredOptions(fragment: string): string[] {
  return fragment
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^CONFIG_[A-Z0-9_]+=y$/.test(l))
    .map((l) => l.slice(0, -2));
}

/** Options of `required` that a generated `.config` does not set to y. */
export function missingOptions(dotConfig: string, required: readonly string[]): string[] {
  const set = new Set(
    dotConfig
      .split('\n')
      .filter((l) => l.endsWith('=y'))
      .map((l) => l.slice(0, -2)),
  );
  return required.filter((o) => !set.has(o));
}

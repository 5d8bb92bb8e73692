export { agentboxHome, imagesDir, cacheDir, boxesDir } from './paths.js';
export { runCommand, type CommandResult, type CommandOptions } from './command.js';
export {
  buildImage,
  imageId,
  type BuildProgress,
  type BuildImageOptions,
  type BuildResult,
} from './image/build.js';
export { rootfsKey, baseKey, hostMirror } from './image/rootfs.js';
export { AGENTS_ENV, parseAgentClis, agentClisFromEnv, agentVersions, agentsKey } from './image/agents.js';
export {
  AGENT_CLIS,
  AGENT_CLI_NAMES,
  DEFAULT_AGENT_CLIS,
  type AgentCli,
  type AgentCliRecipe,
} from './image/recipe.js';
export { loadImage, ImageManifestSchema, type Image, type ImageManifest } from './image/manifest.js';
export {
  planPrune,
  applyPrune,
  imagesToKeep,
  qcow2BackingFile,
  type PrunePlan,
  type PruneItem,
  type ImageFacts,
  type KeepReason,
} from './image/prune.js';
export {
  DEFAULT_RESOURCES,
  type VmTemplate,
  type VmRestoreSource,
  type VmRestoreInfo,
  type Vm,
  type VmBackend,
  type VmSpec,
  type VmState,
  type VmDiskUse,
  type VmMemoryUse,
  type VmUser,
  type VmExit,
  type VmResources,
  type VmShare,
} from './backend.js';
export {
  GuestConnection,
  GUEST_CALL_TIMEOUT_MS,
  type CallOptions,
  type EgressHandler,
  type ExecHandlers,
  type GuestConnectionOptions,
  type GuestLimitNotice,
} from './guest-connection.js';
export { ChannelDuplex } from './channel-duplex.js';
export { QemuBackend, QEMU_BINARY, DEFAULT_TB_SIZE_MIB, type QemuBackendOptions } from './qemu/driver.js';
export { TemplateStore, templateId, TEMPLATE_REVISION, type TemplateManifest } from './template-store.js';
export { type HibernationMeta } from './qemu/hibernation.js';
export { qemuArgs, kernelCmdline, type Accel, type QemuLaunchSpec, type QemuShare } from './qemu/args.js';
export {
  agentEnvFor,
  checkKvm,
  chooseAccel,
  hostTscKhz,
  parseAccelSetting,
  type AccelSetting,
  type AccelVerdict,
  type KvmStatus,
} from './qemu/accel.js';
export { QmpClient, type QmpEvent } from './qemu/qmp.js';
export { RUN_AS_SOCKETS_DIR } from './qemu/host-sockets.js';
export { AdoptedQemuVm, type AdoptSpec } from './qemu/adopted-vm.js';
export {
  processStartTime,
  processCmdline,
  isSameProcess,
  processesMentioning,
  killProcesses,
  killProcessesMentioning,
  availableMemoryBytes,
  VM_OOM_SCORE_ADJ,
} from './qemu/proc.js';
export { TEMPLATE_BUILD_STEPS, type TemplateProgress } from './qemu/template.js';

/* Just enough of Apple's TargetConditionals.h for `cargo xtask check-darwin`
   to build ring's C code for macOS without an Apple SDK (type-checking only:
   nothing built with it is ever linked or run). */
#ifndef AGENT_MANAGER_TARGET_CONDITIONALS_H
#define AGENT_MANAGER_TARGET_CONDITIONALS_H
#define TARGET_OS_MAC 1
#define TARGET_OS_OSX 1
#define TARGET_OS_IPHONE 0
#define TARGET_OS_IOS 0
#define TARGET_OS_TV 0
#define TARGET_OS_WATCH 0
#define TARGET_OS_VISION 0
#define TARGET_OS_SIMULATOR 0
#define TARGET_OS_EMBEDDED 0
#endif

/* <assert.h> for `cargo xtask check-darwin` (see TargetConditionals.h). */
#ifndef AGENT_MANAGER_ASSERT_H
#define AGENT_MANAGER_ASSERT_H
#ifdef NDEBUG
#define assert(x) ((void)0)
#else
#define assert(x) ((x) ? ((void)0) : __builtin_trap())
#endif
#endif

/* stack.c - the preload's own stack: the heavy work of a hook (judging a file,
 * formatting and writing an audit record) runs on a per-thread stack mapped on
 * first use, so the host thread's stack only pays for the hook wrappers (the
 * documented budget, SPP_HOST_STACK_BUDGET). A host thread may have a stack of
 * 32 KiB or less (threading.stack_size, musl-sized threads, coroutines). */
#include "spp.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

/* spp_stack_call(fn, arg, top): call fn(arg) with the stack pointer at `top`
 * and come back to the caller's stack. The frame pointer keeps the caller's
 * stack pointer and the CFI says so, so an unwinder running on the private
 * stack (the audit record's call site) walks on into the host's frames. */
void spp_stack_call(void (*fn)(void *), void *arg, void *top);
#if defined(__x86_64__)
__asm__(".text\n"
        ".globl spp_stack_call\n"
        ".hidden spp_stack_call\n"
        ".type spp_stack_call,@function\n"
        "spp_stack_call:\n"
        ".cfi_startproc\n"
        "pushq %rbp\n"
        ".cfi_def_cfa_offset 16\n"
        ".cfi_offset %rbp, -16\n"
        "movq %rsp, %rbp\n"
        ".cfi_def_cfa_register %rbp\n"
        "movq %rdx, %rsp\n"
        "movq %rdi, %rax\n"
        "movq %rsi, %rdi\n"
        "callq *%rax\n"
        "movq %rbp, %rsp\n"
        "popq %rbp\n"
        ".cfi_def_cfa %rsp, 8\n"
        "ret\n"
        ".cfi_endproc\n"
        ".size spp_stack_call, .-spp_stack_call\n");
#define SPP_HAVE_STACK_CALL 1
#elif defined(__aarch64__)
__asm__(".text\n"
        ".globl spp_stack_call\n"
        ".hidden spp_stack_call\n"
        ".type spp_stack_call,%function\n"
        "spp_stack_call:\n"
        ".cfi_startproc\n"
        "stp x29, x30, [sp, #-16]!\n"
        ".cfi_def_cfa_offset 16\n"
        ".cfi_offset x29, -16\n"
        ".cfi_offset x30, -8\n"
        "mov x29, sp\n"
        ".cfi_def_cfa_register x29\n"
        "mov sp, x2\n"
        "mov x3, x0\n"
        "mov x0, x1\n"
        "blr x3\n"
        "mov sp, x29\n"
        ".cfi_def_cfa sp, 16\n"
        "ldp x29, x30, [sp], #16\n"
        ".cfi_def_cfa_offset 0\n"
        ".cfi_restore x29\n"
        ".cfi_restore x30\n"
        "ret\n"
        ".cfi_endproc\n"
        ".size spp_stack_call, .-spp_stack_call\n");
#define SPP_HAVE_STACK_CALL 1
#else
#define SPP_HAVE_STACK_CALL 0
void spp_stack_call(void (*fn)(void *), void *arg, void *top) { (void)top; fn(arg); }
#endif

/* Per thread: the mapping (guard page at the bottom) and whether this thread
 * is running on it now. The key's destructor unmaps it when the thread ends. */
static SPP_TLS char *spp_alt_base;
static SPP_TLS bool spp_alt_on;
static pthread_key_t spp_alt_key;
static pthread_once_t spp_alt_once = PTHREAD_ONCE_INIT;
static bool spp_alt_key_ok;

static size_t spp_page(void) {
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

static void spp_alt_free(void *base) {
    if (base) munmap(base, SPP_ALTSTACK_SIZE + spp_page());
    spp_alt_base = NULL;
}

static void spp_alt_key_make(void) {
    spp_alt_key_ok = pthread_key_create(&spp_alt_key, spp_alt_free) == 0;
}

/* The top of this thread's private stack, mapped on first use; NULL if it
 * cannot be had (the work then runs on the caller's stack). */
static char *spp_alt_top(void) {
    if (!SPP_HAVE_STACK_CALL) return NULL;
    if (!spp_alt_base) {
        pthread_once(&spp_alt_once, spp_alt_key_make);
        if (!spp_alt_key_ok) return NULL;
        size_t g = spp_page();
        void *m = mmap(NULL, SPP_ALTSTACK_SIZE + g, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
        if (m == MAP_FAILED) return NULL;
        if (mprotect(m, g, PROT_NONE) != 0 || pthread_setspecific(spp_alt_key, m) != 0) {
            munmap(m, SPP_ALTSTACK_SIZE + g);
            return NULL;
        }
        spp_alt_base = m;
    }
    return spp_alt_base + spp_page() + SPP_ALTSTACK_SIZE;
}

void spp_on_altstack(void (*fn)(void *), void *arg) {
    if (spp_alt_on) { fn(arg); return; }   /* already there (nested work) */
    char *top = spp_alt_top();
    if (!top) { fn(arg); return; }
    spp_alt_on = true;
    spp_stack_call(fn, arg, top);
    spp_alt_on = false;
}

/* After fork only the calling thread exists: the other threads' stacks stay
 * mapped in the child (copy-on-write, never touched again), like glibc's. */

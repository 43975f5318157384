/* Real compiler shapes for the ARM32 prologue lint (tests/test_arm32_prologue.py),
 * compiled with the flags of an ARM kernel with CONFIG_FRAME_POINTER and
 * CONFIG_FUNCTION_TRACER: -marm -pg -mapcs-frame -fno-omit-frame-pointer -O2. */
#include <stdarg.h>

extern int ext(int, void *);

/* the bare frame */
int plain(int a) { return ext(a, 0) + 1; }

/* locals: sub sp, sp, #N */
int with_locals(int a) { char buf[100]; return ext(a, buf); }

/* variadic: r0-r3 pushed before the frame (an argument spill) */
int variadic(int n, ...)
{
	va_list ap;
	int r;

	va_start(ap, n);
	r = ext(n, &ap);
	va_end(ap);
	return r;
}

/* a frame no single modified immediate can encode: two sub sp */
int huge(int a) { char buf[70000]; return ext(a, buf); }

/* a VFP callee-saved register kept across a call: vpush */
double fpmul(double x, int a) { return x * ext(a, 0); }

/* notrace */
__attribute__((no_instrument_function)) int notrace_fn(int a) { return ext(a, 0); }

/* a struct argument split between r2-r3 and the stack: GCC reserves its
 * register half below the caller's arguments (sub sp, sp, #8) before the
 * frame push, and stores r2-r3 there after the mcount call */
struct ts { long long sec; long nsec; };
long long split_arg(int a, struct ts t) { return ext(a, &t) + t.sec; }

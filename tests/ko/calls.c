/*
 * Compiled at test time the way kernel modules are (-mcmodel=medium
 * -fno-common -mno-pointers-to-nested-functions, ftrace's -pg
 * -mprofile-kernel on ppc64le) plus kpatch's -ffunction-sections, then
 * (in tests/test_ko.py) turned into a livepatch object: show_val_kb becomes
 * ".klp.sym.vmlinux.show_val_kb,0" (SHN_LIVEPATCH), as in the seed thread's
 * livepatched meminfo_proc_show().
 */
extern int ext_func(int);
extern int ext_other(int);
extern int ext_hidden(int) __attribute__((visibility("hidden")));

/* Local to its object: callers reach it with a bare "bl", no nop after. */
static __attribute__((noinline)) int show_val_kb(int x)
{
	return x * 3 + ext_other(x);
}

/* Correct: "bl ext_func; nop". */
int good_call(int x)
{
	return ext_func(x) + 1;
}

/* gcc never tail-calls an extern on ELFv2 (the TOC may differ): "bl; nop". */
int sibling_call(int x)
{
	return ext_func(x);
}

int hidden_call(int x)
{
	return ext_hidden(x) + 5;
}

/* Two local calls to show_val_kb without a nop after them. */
int meminfo_proc_show(int x)
{
	return show_val_kb(x) + show_val_kb(x + 1);
}

/* A local sibling call: "b show_val_kb". */
int tail_local(int x)
{
	return show_val_kb(x + 7);
}

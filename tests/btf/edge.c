/* Every BTF kind, for tests/test_btf.py: compiled at test time with
 * clang -target bpf (bpfel and bpfeb: both byte orders, DECL_TAG, TYPE_TAG,
 * VAR, DATASEC, FUNC, FUNC_PROTO with ...) and, for ENUM64 (clang 14 has
 * none), with gcc -g then pahole -J. */
#ifdef __clang__
#define __tag(x) __attribute__((btf_decl_tag(x)))
#define __ttag(x) __attribute__((btf_type_tag(x)))
#else
#define __tag(x)
#define __ttag(x)
#endif

enum big { BIG_A = 1, BIG_B = 0x100000000ULL };
enum neg { NEG_A = -1, NEG_B = 2 };
enum small { SMALL_A, SMALL_B = 0x80000000u };

struct s {
	int a;
	unsigned b:3;
	unsigned c:5;
	struct s *next;
	const volatile char *restrict p;
	float f;
	double d;
	int arr[4];
	_Bool flag;
	union {
		long l;
		char bytes[8];
	};
	struct {
		short x, y;
	} pt;
};
typedef struct s s_t;
union u { long l; char c[8]; };
struct fwd;

int v_global = 1;
static int v_static;
s_t g_s;
struct fwd *g_fwd;
enum big g_big;
enum neg g_neg;
enum small g_small;
union u g_u;
int (*g_vfp)(int, ...);

struct tagged {
	int __tag("member_tag") m;
	int __ttag("user") *up;
} __tag("struct_tag");
struct tagged g_tagged __tag("var_tag");

int func(int x)
{
	return x + v_static;
}

int tagged_func(int a) __tag("func_tag");
int tagged_func(int a __tag("param_tag"))
{
	return a + 1;
}

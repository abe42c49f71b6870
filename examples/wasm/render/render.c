/* render: a small ray tracer for idlegrid's `run` (WASI preview 1).
 *
 *   render FRAME FRAMES [WIDTH HEIGHT]  > frame.png
 *
 * Renders frame FRAME of an animation of FRAMES frames: three spheres orbiting above a
 * checkered floor, lit by one light with hard shadows and one mirror bounce, the camera
 * circling the scene once over the animation. Writes one PNG (8-bit RGB, zlib "stored"
 * blocks: no compression, no dependency) to stdout.
 *
 * Deterministic by construction: only + - * / and sqrt (exact in IEEE 754), sines and
 * cosines from a fixed polynomial here rather than the platform's libm, no threads, no
 * clock. Built with -ffp-contract=off, the same source gives the same bytes compiled
 * natively or to WebAssembly, which is what docs/benchmarks.md compares.
 *
 * Build:  clang --target=wasm32-wasi -O2 -ffp-contract=off render.c -o render.wasm
 * Native: clang -O2 -ffp-contract=off render.c -o render
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

typedef struct { double x, y, z; } vec;
static vec v(double x, double y, double z) { vec r = {x, y, z}; return r; }
static vec add(vec a, vec b) { return v(a.x + b.x, a.y + b.y, a.z + b.z); }
static vec sub(vec a, vec b) { return v(a.x - b.x, a.y - b.y, a.z - b.z); }
static vec mul(vec a, double s) { return v(a.x * s, a.y * s, a.z * s); }
static vec hadamard(vec a, vec b) { return v(a.x * b.x, a.y * b.y, a.z * b.z); }
static double dot(vec a, vec b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
static vec cross(vec a, vec b) {
    return v(a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x);
}
static vec norm(vec a) { return mul(a, 1.0 / sqrt(dot(a, a))); }

/* sin and cos on [-pi, pi] by Taylor series to x^15: the same bits everywhere. */
static const double PI = 3.14159265358979323846;
static double wrap(double a) {
    while (a > PI) a -= 2 * PI;
    while (a < -PI) a += 2 * PI;
    return a;
}
static double dsin(double a) {
    a = wrap(a);
    double term = a, sum = a, a2 = a * a;
    for (int n = 1; n <= 7; n++) {
        term = -term * a2 / ((2 * n) * (2 * n + 1));
        sum += term;
    }
    return sum;
}
static double dcos(double a) { return dsin(a + PI / 2); }

typedef struct { vec c; double r; vec colour; double mirror; } sphere;
#define SPHERES 4
static sphere scene[SPHERES];
static const vec LIGHT = {-4.0, 7.0, -3.0};

static void animate(double t) {
    for (int i = 0; i < 3; i++) {
        double a = 2 * PI * (t + i / 3.0);
        scene[i].c = v(1.6 * dcos(a), 0.7 + 0.35 * dsin(2 * a + i), 1.6 * dsin(a));
        scene[i].r = 0.55;
        scene[i].mirror = 0.25;
    }
    scene[0].colour = v(0.9, 0.25, 0.2);
    scene[1].colour = v(0.2, 0.75, 0.3);
    scene[2].colour = v(0.25, 0.35, 0.9);
    scene[3] = (sphere){v(0, 0.9, 0), 0.8, v(0.95, 0.95, 0.95), 0.8};
}

/* Nearest hit along o + d*t (d normalised): t, or -1. *what: sphere index, or
 * SPHERES for the floor (y = 0). */
static double hit(vec o, vec d, int *what) {
    double best = -1;
    for (int i = 0; i < SPHERES; i++) {
        vec oc = sub(o, scene[i].c);
        double b = dot(oc, d), c = dot(oc, oc) - scene[i].r * scene[i].r;
        double disc = b * b - c;
        if (disc < 0) continue;
        double t = -b - sqrt(disc);
        if (t > 1e-6 && (best < 0 || t < best)) { best = t; *what = i; }
    }
    if (d.y < -1e-9) {
        double t = -o.y / d.y;
        if (t > 1e-6 && (best < 0 || t < best)) { best = t; *what = SPHERES; }
    }
    return best;
}

static vec sky(vec d) {
    double k = 0.5 * (d.y + 1);
    return add(mul(v(1, 1, 1), 1 - k), mul(v(0.45, 0.65, 1.0), k));
}

static vec trace(vec o, vec d, int depth) {
    int what = -1;
    double t = hit(o, d, &what);
    if (t < 0) return sky(d);
    vec p = add(o, mul(d, t)), n, base;
    double mirror;
    if (what == SPHERES) {
        n = v(0, 1, 0);
        int check = ((int)floor(p.x) + (int)floor(p.z)) & 1;
        base = check ? v(0.85, 0.85, 0.8) : v(0.25, 0.25, 0.3);
        mirror = 0.1;
    } else {
        n = norm(sub(p, scene[what].c));
        base = scene[what].colour;
        mirror = scene[what].mirror;
    }
    vec l = norm(sub(LIGHT, p));
    int blocker = -1;
    double shadow = hit(add(p, mul(n, 1e-4)), l, &blocker);
    double lit = dot(n, l);
    if (lit < 0 || (shadow > 0 && shadow < sqrt(dot(sub(LIGHT, p), sub(LIGHT, p))))) lit = 0;
    vec colour = mul(base, 0.15 + 0.85 * lit);
    if (depth > 0 && mirror > 0) {
        vec r = sub(d, mul(n, 2 * dot(d, n)));
        vec bounce = trace(add(p, mul(n, 1e-4)), norm(r), depth - 1);
        colour = add(mul(colour, 1 - mirror), hadamard(bounce, v(mirror, mirror, mirror)));
    }
    return colour;
}

/* PNG output: CRC-32 and Adler-32 as the format defines them. */
static uint32_t crc_table[256];
static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}
static uint32_t crc(uint32_t c, const uint8_t *buf, size_t len) {
    c ^= 0xffffffffu;
    for (size_t i = 0; i < len; i++) c = crc_table[(c ^ buf[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}
static void be32(uint8_t *p, uint32_t x) {
    p[0] = x >> 24; p[1] = x >> 16; p[2] = x >> 8; p[3] = x;
}
static void chunk(const char *type, const uint8_t *data, uint32_t len) {
    uint8_t head[8];
    be32(head, len);
    memcpy(head + 4, type, 4);
    uint32_t c = crc(crc(0, head + 4, 4), data, len);
    uint8_t tail[4];
    be32(tail, c);
    fwrite(head, 1, 8, stdout);
    fwrite(data, 1, len, stdout);
    fwrite(tail, 1, 4, stdout);
}

static void write_png(const uint8_t *rgb, int w, int h) {
    size_t raw_len = (size_t)h * (3 * (size_t)w + 1);
    uint8_t *raw = malloc(raw_len);
    for (int y = 0; y < h; y++) {
        raw[y * (3 * (size_t)w + 1)] = 0; /* filter: none */
        memcpy(raw + y * (3 * (size_t)w + 1) + 1, rgb + (size_t)y * 3 * w, 3 * (size_t)w);
    }
    size_t blocks = raw_len / 65535 + 1;
    size_t z_len = 2 + raw_len + 5 * blocks + 4;
    uint8_t *z = malloc(z_len), *q = z;
    *q++ = 0x78; *q++ = 0x01;
    uint32_t a = 1, b = 0;
    for (size_t off = 0; off < raw_len || off == 0; ) {
        size_t n = raw_len - off > 65535 ? 65535 : raw_len - off;
        *q++ = off + n == raw_len ? 1 : 0;
        *q++ = n & 0xff; *q++ = n >> 8; *q++ = ~n & 0xff; *q++ = (~n >> 8) & 0xff;
        memcpy(q, raw + off, n);
        q += n;
        off += n;
        if (n == 0) break;
    }
    for (size_t i = 0; i < raw_len; i++) { a = (a + raw[i]) % 65521; b = (b + a) % 65521; }
    be32(q, (b << 16) | a);
    q += 4;
    static const uint8_t sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    fwrite(sig, 1, 8, stdout);
    uint8_t ihdr[13];
    be32(ihdr, w); be32(ihdr + 4, h);
    ihdr[8] = 8; ihdr[9] = 2; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
    chunk("IHDR", ihdr, 13);
    chunk("IDAT", z, (uint32_t)(q - z));
    chunk("IEND", NULL, 0);
    free(raw);
    free(z);
}

static uint8_t to_byte(double c) {
    if (!(c > 0)) return 0;
    if (c >= 1) return 255;
    return (uint8_t)(sqrt(c) * 255 + 0.5); /* gamma 2 */
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: render FRAME FRAMES [WIDTH HEIGHT] > frame.png\n");
        return 2;
    }
    int frame = atoi(argv[1]), frames = atoi(argv[2]);
    int w = argc > 4 ? atoi(argv[3]) : 320, h = argc > 4 ? atoi(argv[4]) : 240;
    if (frames <= 0 || frame < 0 || frame >= frames || w <= 0 || h <= 0 || w > 4096 || h > 4096) {
        fprintf(stderr, "render: bad frame %s of %s or size %dx%d\n", argv[1], argv[2], w, h);
        return 2;
    }
    crc_init();
    double t = (double)frame / frames;
    animate(t);
    double a = 2 * PI * t;
    vec eye = v(5.5 * dcos(a), 2.4, 5.5 * dsin(a)), target = v(0, 0.7, 0);
    vec fwd = norm(sub(target, eye)), right = norm(cross(fwd, v(0, 1, 0)));
    vec up = cross(right, fwd);
    uint8_t *rgb = malloc((size_t)w * h * 3);
    double aspect = (double)w / h, fov = 0.75;
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            vec sum = v(0, 0, 0);
            for (int s = 0; s < 4; s++) { /* 2x2 supersampling */
                double px = (2 * (x + 0.25 + 0.5 * (s & 1)) / w - 1) * aspect * fov;
                double py = (1 - 2 * (y + 0.25 + 0.5 * (s >> 1)) / h) * fov;
                vec d = norm(add(fwd, add(mul(right, px), mul(up, py))));
                sum = add(sum, trace(eye, d, 2));
            }
            uint8_t *p = rgb + ((size_t)y * w + x) * 3;
            p[0] = to_byte(sum.x / 4); p[1] = to_byte(sum.y / 4); p[2] = to_byte(sum.z / 4);
        }
    }
    write_png(rgb, w, h);
    free(rgb);
    return 0;
}

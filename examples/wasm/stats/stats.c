/* stats: per-file statistics, a batch job over files for idlegrid's `run` (WASI p1).
 *
 *   stats NAME < FILE     prints one CSV line:
 *   NAME,bytes,mean,stddev,entropy_bits_per_byte,fnv1a64
 *
 * Over the byte values of FILE (its stdin on the grid): their count, mean, standard
 * deviation and Shannon entropy, and an FNV-1a hash. With `--join concat` the lines of
 * all files make one CSV, in input order:
 *
 *   idlegrid run stats.wasm data/a.png data/b.png --args "{name}" -o stats.csv --join concat
 *
 * Build: clang --target=wasm32-wasi -O2 stats.c -o stats.wasm
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "-";
    uint64_t counts[256] = {0}, total = 0, hash = 0xcbf29ce484222325ull;
    unsigned char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        for (size_t i = 0; i < n; i++) {
            counts[buf[i]]++;
            hash = (hash ^ buf[i]) * 0x100000001b3ull;
        }
        total += n;
    }
    if (ferror(stdin)) {
        fprintf(stderr, "stats: cannot read %s\n", name);
        return 1;
    }
    double mean = 0, var = 0, entropy = 0;
    if (total > 0) {
        for (int b = 0; b < 256; b++) mean += (double)b * counts[b];
        mean /= total;
        for (int b = 0; b < 256; b++) {
            double d = b - mean, p = (double)counts[b] / total;
            var += d * d * counts[b];
            if (p > 0) entropy -= p * log2(p);
        }
        var /= total;
    }
    printf("%s,%llu,%.6f,%.6f,%.6f,%016llx\n", name, (unsigned long long)total, mean, sqrt(var),
           entropy, (unsigned long long)hash);
    return 0;
}

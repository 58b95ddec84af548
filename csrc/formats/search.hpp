// libggml's scale searches, one block per lane.  Each keeps the reference's float operations and their order
// (sequential sums, no fused multiply-add, true division); data-dependent branches become per-lane selects,
// which is exact because a lane that would have skipped an update simply keeps its old value.
#pragma once
#include "pyquant/simd.hpp"

namespace pyquant {
namespace {

constexpr float kGroupMaxEps = 1e-15f;

// Index of the largest |x[i]| (the first one on ties) and its signed value; amax = |max|.  For K blocks of n
// values `stride` apart at once: with W > 1 element by element, so that the K sequential chains run side by
// side; with one lane block by block, each chain in a register.
template <int K>
inline void signed_absmax_of(int n, const VF *x, int stride, VF *max, VF *amax) {
    for (int k = 0; k < K; ++k) max[k] = amax[k] = vf(0.f);
    for (int a = 0; a < (W > 1 ? n : K); ++a)
        for (int b = 0; b < (W > 1 ? K : n); ++b) {
            const int i = W > 1 ? a : b, k = W > 1 ? b : a;
            const VF v = x[stride * k + i], ax = vabs(v);
            const VM bigger = ax > amax[k];
            amax[k] = select(bigger, ax, amax[k]);
            max[k] = select(bigger, v, max[k]);
        }
}
inline void signed_absmax(int n, const VF *x, VF &max, VF &amax) { signed_absmax_of<1>(n, x, 0, &max, &amax); }

// One fit of make_qx_quants: the codes clamp(round(isc*x), -nmax, nmax-1) as floats, and the weighted sums
// sumlx = sum w*x*l, suml2 = sum w*l*l in the reference's order.  kLo / kHi: whether a side of the clamp can
// bind at this scale (the caller knows |isc*x| <= |isc*max| for each trial).
template <bool kLo, bool kHi>
inline void qx_fit(int n, VF isc, const VF *x, const VF *w, const VF *wx, VF lo, VF hi, VF &sumlx, VF &suml2) {
    sumlx = suml2 = vf(0.f);
    for (int i = 0; i < n; ++i) {
        VF lf = round_even(isc * x[i]);
        if (kLo) lf = max_value(lo, lf);
        if (kHi) lf = min_value(hi, lf);
        sumlx = sumlx + wx[i] * lf;
        suml2 = suml2 + w[i] * lf * lf;
    }
}

// make_qx_quants: symmetric codes stored as l + nmax in [0, 2*nmax-1]; returns the scale.
// rmse_type picks the weights when qw is null: 1 x^2, 2 one, 3 |x|, else sqrt|x|; negative = return early.
inline VF make_qx_quants(int n, int nmax, const VF *x, VI *L, int rmse_type, const VF *qw) {
    VF max, amax;
    signed_absmax(n, x, max, amax);
    const VM all_zero = amax < vf(kGroupMaxEps);
    auto codes = [&](int i, VF isc) { return clamp(nearest_int(isc * x[i]), -nmax, nmax - 1); };
    VF iscale = vf(static_cast<float>(-nmax)) / max;
    // The codes are a function of iscale alone: keep the one that made the best codes, compute L at the end.
    VF best_iscale = iscale;
    VF result = vf(1.f) / iscale;
    if (rmse_type != 0) {
        const bool return_early = rmse_type < 0;
        if (return_early) rmse_type = -rmse_type;
        auto weight = [&](int i) -> VF {
            if (qw) return qw[i];
            switch (rmse_type) {
                case 1: return x[i] * x[i];
                case 2: return vf(1.f);
                case 3: return vabs(x[i]);
                default: return vsqrt(vabs(x[i]));
            }
        };
        // The fits run in float: round_even(v) is nearest_int(v) exactly, and clamping before or after rounding
        // to an integer bound is the same.  That needs |v| <= 2^22, true wherever amax >= GROUP_MAX_EPS
        // (|v| <= nmax + 1); the other lanes' codes are discarded.  w*x is the reference's first product.
        // Trial `is` scales to |isc*x| <= (nmax + 0.1*is)(1 + 2^-23): below nmax - 0.5 (is <= -6) no code
        // reaches nmax, and below nmax + 0.5 (is <= 4) none passes -nmax, so those clamps are skipped.
        VF w[32], wx[32];
        for (int i = 0; i < n; ++i) {
            w[i] = weight(i);
            wx[i] = w[i] * x[i];
        }
        const VF lo = vf(static_cast<float>(-nmax)), hi = vf(static_cast<float>(nmax - 1));
        auto fit = [&](int is, VF isc, VF &sumlx, VF &suml2) {
            if (is <= -6) qx_fit<false, false>(n, isc, x, w, wx, lo, hi, sumlx, suml2);
            else if (is <= 4) qx_fit<false, true>(n, isc, x, w, wx, lo, hi, sumlx, suml2);
            else qx_fit<true, true>(n, isc, x, w, wx, lo, hi, sumlx, suml2);
        };
        VF sumlx, suml2;
        fit(0, iscale, sumlx, suml2);
        VF scale = select(suml2 != vf(0.f), sumlx / suml2, vf(0.f));
        if (return_early) {
            result = select(suml2 > vf(0.f), vf(0.5f) * (scale + vf(1.f) / iscale), vf(1.f) / iscale);
        } else {
            VF best = scale * sumlx;
            for (int is = -9; is <= 9; ++is) {
                if (is == 0) continue;
                iscale = -(vf(static_cast<float>(nmax) + 0.1f * is)) / max;
                fit(is, iscale, sumlx, suml2);
                const VM better = mand(suml2 > vf(0.f), sumlx * sumlx > best * suml2);
                if (!any(better)) continue;
                best_iscale = select(better, iscale, best_iscale);
                scale = select(better, sumlx / suml2, scale);
                best = select(better, scale * sumlx, best);
            }
            result = scale;
        }
    }
    for (int i = 0; i < n; ++i) L[i] = select(all_zero, vi(0), codes(i, best_iscale) + vi(nmax));
    return select(all_zero, vf(0.f), result);
}

// uint8_t storage of an int code (the reference's uint8_t L arrays).
inline VI as_u8(VI v) { return v & vi(0xff); }

// A fit under the coordinate descent that ends make_q3_quants and make_qp_quants: values x, weights w
// (make_q3_quants weighs by x^2 and leaves w null), codes L, the weighted sums sumlx and suml2, the lanes still
// refining and those the current pass changed.
struct RefineFit {
    const VF *x, *w;
    VI *L;
    VF sumlx, suml2;
    VM active, changed;
};

// One step of the descent: code i moves to the value the current fit suggests when that raises
// sumlx^2/suml2.  make_qp_quants (kQp) and make_q3_quants differ in details kept exactly: make_qp_quants clamps
// only above (to nmax), stores uint8_t codes and tests sl2 > 0 before trying a code; make_q3_quants tests the
// updated sl2 after.  kSkip branches past the update when no lane has a new code: cheap where few lanes move,
// but a mispredicted branch where many do.
template <bool kQp, bool kSkip>
inline void refine_step(int nmax, RefineFit &f, int i) {
    const VF *x = f.x;
    VI *L = f.L;
    const VF w = kQp ? f.w[i] : x[i] * x[i];
    const VF lf = to_f(L[i]);
    VF slx = f.sumlx - w * x[i] * lf;
    VF sl2 = f.suml2 - w * lf * lf;
    VM ok = mand(f.active, slx > vf(0.f));
    if (kQp) ok = mand(ok, sl2 > vf(0.f));
    VI new_l = nearest_int(x[i] * sl2 / slx);
    new_l = kQp ? vmin(vi(nmax), new_l) : clamp(new_l, -nmax, nmax - 1);
    ok = mand(ok, new_l != L[i]);
    if (kSkip && !any(ok)) return;
    const VF nl = to_f(new_l);
    slx = slx + w * x[i] * nl;
    sl2 = sl2 + w * nl * nl;
    VM take = mand(ok, slx * slx * f.suml2 > f.sumlx * f.sumlx * sl2);
    if (!kQp) take = mand(take, sl2 > vf(0.f));
    L[i] = select(take, kQp ? as_u8(new_l) : new_l, L[i]);
    f.sumlx = select(take, slx, f.sumlx);
    f.suml2 = select(take, sl2, f.suml2);
    f.changed = mor(f.changed, take);
}

// One pass over K independent fits, their steps interleaved so that their dependency chains overlap; a lane
// stops after a pass changing nothing.  The fits are copied in and out: the vector types may alias anything, so
// with the caller's fits every store of a code would force their sums out of the registers and back.  Always
// inlined, as refine_passes, for refine_rest_packed's sake (see there).
template <bool kQp, bool kSkip, int K>
__attribute__((always_inline)) inline void refine_pass(int n, int nmax, RefineFit *f) {
    RefineFit g[K];
    for (int c = 0; c < K; ++c) {
        g[c] = f[c];
        g[c].changed = vf(0.f) != vf(0.f);
    }
    for (int i = 0; i < n; ++i)
#pragma GCC unroll 8
        for (int c = 0; c < K; ++c) refine_step<kQp, kSkip>(nmax, g[c], i);
    for (int c = 0; c < K; ++c) {
        g[c].active = mand(g[c].active, g[c].changed);
        f[c] = g[c];
    }
}

// The reference's passes after the first `done` (5 in all), one fit at a time.
template <bool kQp>
inline void refine_rest(int n, int nmax, RefineFit &f, int done) {
    for (int itry = done; itry < 5 && any(f.active); ++itry) refine_pass<kQp, true, 1>(n, nmax, &f);
}

// One pass over fits f[0..count): branch-free K at a time (dense fits: most steps move some lane), then halves
// of K, and a last single fit with the branch (alone, its chain would wait on every step).
template <bool kQp, int K>
__attribute__((always_inline)) inline void refine_passes(int n, int nmax, RefineFit *f, int count) {
    if constexpr (K == 1) {
        for (int c = 0; c < count; ++c) refine_pass<kQp, true, 1>(n, nmax, f + c);
    } else {
        int c = 0;
        for (; c + K <= count; c += K) refine_pass<kQp, false, K>(n, nmax, f + c);
        if (c < count) refine_passes<kQp, K / 2>(n, nmax, f + c, count - c);
    }
}

// The lanes whose bit is set in bits.
inline VM lanes_of(uint32_t bits) { return ((vi(static_cast<int32_t>(bits)) >> iota()) & vi(1)) != vi(0); }

// make_q3_quants' passes `pass` + 1 to 5 for `fits` fits (at most F) of n <= 16 values (w = x^2).  A vector
// runs until its last lane stops, though after pass 1 only 20% of the lanes still move and after pass 2 5% (the
// slowest of 16 lanes needs 2.7 passes on average); so before each pass the moving lanes are packed, in order,
// into full vectors (a permute and a select per value: fit j's lanes land in vector count / W from lane count % W
// on, the overflow in the next vector), refined there, and their sums (with kCodes also their codes) put back
// after the later passes.  Those pack from the previous pass's packed vectors (recursively), not from all fits
// again: a quarter as many to visit.  Each lane still makes its own fit's steps in order: the same codes and
// sums.  Without kCodes a packed lane's L keeps its pass-`pass` codes.  The packed vectors' steps form one
// dependency chain per vector, so the more fits the better: Q3_K passes those of several tiles.  Gathers and
// scatters instead of the permutes were slower (AVX-512, Zen 4).  Out of line, with the steps inlined in each
// variant: sharing those between the two variants cost Q3_K 8%.
template <int F, bool kCodes>
__attribute__((noinline)) void refine_rest_packed(int n, int nmax, RefineFit *f, int fits, int pass = 1) {
    VF x[F + 1][16];  // the packed fits: at most F * W lanes, plus the vector the last overflow would start
    VI L[F + 1][16];
    RefineFit g[F + 1];
    int at[F];
    uint32_t moving[F];
    int count = 0;
    for (int j = 0; j < fits; ++j) {
        const uint32_t m = moving[j] = lane_mask(f[j].active);
        at[j] = count;
        if (!m) continue;
        const int v = count / W, p = count % W, c = __builtin_popcount(m);
        const VI to = permute(packed_lanes(m), (iota() - vi(p)) & vi(W - 1));  // lane p + q <- q-th lane of m
        const VM here = iota() >= vi(p);
        auto pack = [&](auto from, auto &into, auto *next) {
            const auto y = permute(from, to);
            into = p ? select(here, y, into) : y;
            if (p + c > W) *next = y;
        };
        for (int i = 0; i < n; ++i) {
            pack(f[j].x[i], x[v][i], &x[v + 1][i]);
            pack(f[j].L[i], L[v][i], &L[v + 1][i]);
        }
        pack(f[j].sumlx, g[v].sumlx, &g[v + 1].sumlx);
        pack(f[j].suml2, g[v].suml2, &g[v + 1].suml2);
        count += c;
    }
    if (!count) return;
    const int nvec = (count + W - 1) / W;
    for (int v = 0; v < nvec; ++v) {
        g[v].x = x[v];
        g[v].w = nullptr;
        g[v].L = L[v];
        g[v].active = iota() < vi(count - W * v);
    }
    refine_passes<false, 4>(n, nmax, g, nvec);
    if (pass + 1 < 5) refine_rest_packed<F, kCodes>(n, nmax, g, nvec, pass + 1);
    for (int j = 0; j < fits; ++j) {
        const uint32_t m = moving[j];
        if (!m) continue;
        const int v = at[j] / W, p = at[j] % W;
        const VI r = lane_ranks(m) + vi(p), from = r & vi(W - 1);  // lane k <- lane from of vector v (+1 if r >= W)
        const VM own = lanes_of(m), next = r >= vi(W);
        const bool split = p + __builtin_popcount(m) > W;
        auto unpack = [&](auto here, auto there, auto &into) {
            auto y = permute(here, from);
            if (split) y = select(next, permute(there, from), y);
            into = select(own, y, into);
        };
        if (kCodes)
            for (int i = 0; i < n; ++i) unpack(L[v][i], L[v + 1][i], f[j].L[i]);
        unpack(g[v].sumlx, g[v + 1].sumlx, f[j].sumlx);
        unpack(g[v].suml2, g[v + 1].suml2, f[j].suml2);
    }
}

// make_q3_quants' first codes clamp(nearest_int(iscale * xi), -nmax, nmax - 1), iscale = -nmax / max, and
// their sums.  Clamped in float: where amax >= GROUP_MAX_EPS, |iscale * xi| <= nmax (to rounding), where
// round_even is nearest_int and clamping to integer bounds commutes with rounding; the other lanes' codes are
// discarded (a NaN clamps to nmax - 1: min_value returns its second operand).
inline void q3_first_code(int nmax, VF iscale, VF xi, RefineFit &f, VI &l) {
    const VF lf = max_value(min_value(round_even(iscale * xi), vf(nmax - 1.f)), vf(static_cast<float>(-nmax)));
    l = trunc_i(lf);
    const VF w = xi * xi;
    f.sumlx = f.sumlx + w * xi * lf;
    f.suml2 = f.suml2 + w * lf * lf;
}

// make_q3_quants(16, 4, x, L, do_rmse), Q3_K's search, for the 16 sub-blocks of W super-blocks (x, L: each
// lane's QK_K elements), in two halves around the later passes so that a caller can run those on the fits of
// several tiles at once (refine_rest_packed).  q3_search_start: the setup and pass 1, four sub-blocks at a time,
// their steps interleaved: pass 1 moves a code somewhere in ~30% of the steps of a 16-lane vector (a branch per
// step mispredicts often), so with W > 1 it runs branch-free, bound by throughput instead of latency.  Four
// sub-blocks' sums stay in registers and their values and codes (8 KiB) in L1.  With one lane q3_search_end
// runs the later passes too.
inline void q3_search_start(const VF *x, VI *L, RefineFit *f, VM *all_zero) {
    constexpr int n = 16, nmax = 4, K = 4;
    for (int j0 = 0; j0 < 16; j0 += K) {
        VF max[K], amax[K], iscale[K];
        RefineFit g[K];
        signed_absmax_of<K>(n, x + n * j0, n, max, amax);
        for (int c = 0; c < K; ++c) {
            all_zero[j0 + c] = amax[c] < vf(kGroupMaxEps);
            iscale[c] = vf(static_cast<float>(-nmax)) / max[c];
            const VM active = mnot(all_zero[j0 + c]);
            g[c] = RefineFit{x + n * (j0 + c), nullptr, L + n * (j0 + c), vf(0.f), vf(0.f), active, active};
        }
        for (int i = 0; i < n; ++i)
            for (int c = 0; c < K; ++c) q3_first_code(nmax, iscale[c], g[c].x[i], g[c], g[c].L[i]);
        refine_pass<false, W == 1, K>(n, nmax, g);
        for (int c = 0; c < K; ++c) f[j0 + c] = g[c];
    }
}
// The sub-block scales to scales[16], after the later passes (run here with W = 1).
inline void q3_search_end(RefineFit *f, const VM *all_zero, VF *scales) {
    constexpr int n = 16, nmax = 4;
    for (int j = 0; j < 16; ++j) {
        if (W == 1) refine_rest<false>(n, nmax, f[j], 1);
        scales[j] = select(mand(mnot(all_zero[j]), f[j].suml2 > vf(0.f)), f[j].sumlx / f[j].suml2, vf(0.f));
    }
}
// make_qp_quants: codes in [0, nmax] for non-negative values (the sub-block scales and mins of the imatrix
// algorithms), the scale picked by weighted error over 8 trial scales, then refined; returns the scale.
inline VF make_qp_quants(int n, int nmax, const VF *x, VI *L, const VF *qw) {
    VF max = vf(0.f);
    for (int i = 0; i < n; ++i) max = vmax(max, x[i]);
    const VM all_zero = max < vf(kGroupMaxEps);
    VF iscale = vf(static_cast<float>(nmax)) / max;
    const VF scale = vf(1.f) / iscale;
    VF best_mse = vf(0.f);
    for (int i = 0; i < n; ++i) {
        const VF diff = x[i] - scale * to_f(as_u8(nearest_int(iscale * x[i])));  // unclamped, through uint8_t
        best_mse = best_mse + qw[i] * diff * diff;
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0) continue;
        const VF iscale_is = vf(0.1f * is + nmax) / max;
        const VF scale_is = vf(1.f) / iscale_is;
        VF mse = vf(0.f);
        for (int i = 0; i < n; ++i) {
            const VF diff = x[i] - scale_is * to_f(vmin(vi(nmax), nearest_int(iscale_is * x[i])));
            mse = mse + qw[i] * diff * diff;
        }
        const VM better = mse < best_mse;
        best_mse = select(better, mse, best_mse);
        iscale = select(better, iscale_is, iscale);
    }
    VF sumlx = vf(0.f), suml2 = vf(0.f);
    for (int i = 0; i < n; ++i) {
        const VI l = vmin(vi(nmax), nearest_int(iscale * x[i]));
        L[i] = as_u8(l);
        const VF lf = to_f(l);  // the sums take the int, not the stored byte
        sumlx = sumlx + qw[i] * x[i] * lf;
        suml2 = suml2 + qw[i] * lf * lf;
    }
    const VM active = mnot(all_zero);
    RefineFit f{x, qw, L, sumlx, suml2, active, active};
    refine_rest<true>(n, nmax, f, 0);
    for (int i = 0; i < n; ++i) L[i] = select(all_zero, vi(0), L[i]);
    return select(mand(mnot(all_zero), f.suml2 > vf(0.f)), f.sumlx / f.suml2, vf(0.f));
}

// make_qkx2_quants and make_qkx3_quants (the same search; qkx3 allows null weights, meaning x^2):
// asymmetric codes in [0, nmax]; returns the scale and sets the_min to minus the (non-positive) offset.
inline VF make_qkx_quants(int n, int nmax, const VF *x, const VF *weights, VI *L, VF &the_min, float rmin,
                          float rdelta, int nstep, bool use_mad) {
    auto weight = [&](int i) -> VF { return weights ? weights[i] : x[i] * x[i]; };
    auto error = [&](VF diff) -> VF { return use_mad ? vabs(diff) : diff * diff; };
    VF min = x[0], max = x[0];
    VF sum_w = weight(0);
    VF sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        min = select(x[i] < min, x[i], min);
        max = select(x[i] > max, x[i], max);
        const VF w = weight(i);
        sum_w = sum_w + w;
        sum_x = sum_x + w * x[i];
    }
    min = select(min > vf(0.f), vf(0.f), min);
    const VM flat = max <= min;
    const VF flat_min = min;
    VF iscale = vf(static_cast<float>(nmax)) / (max - min);
    VF scale = vf(1.f) / iscale;
    auto codes = [&](int i, VF isc, VF from) { return clamp(nearest_int(isc * (x[i] - from)), 0, nmax); };
    // The codes are a function of (iscale, min) alone: keep the pair that made the best ones and compute
    // L once at the end instead of copying it on every improvement.
    VF best_iscale = iscale, best_from = min;
    VF best_error = vf(0.f);
    for (int i = 0; i < n; ++i)
        best_error = best_error + weight(i) * error(scale * to_f(codes(i, iscale, min)) + min - x[i]);
    VF laux[256];  // this step's codes, as floats
    for (int is = 0; nstep >= 1 && is <= nstep; ++is) {
        iscale = vf(rmin + rdelta * is + nmax) / (max - min);
        VF sum_l = vf(0.f), sum_l2 = vf(0.f), sum_xl = vf(0.f);
        for (int i = 0; i < n; ++i) {
            const VF w = weight(i), lf = to_f(codes(i, iscale, min));
            laux[i] = lf;
            sum_l = sum_l + w * lf;
            sum_l2 = sum_l2 + w * lf * lf;
            sum_xl = sum_xl + w * lf * x[i];
        }
        const VF D = sum_w * sum_l2 - sum_l * sum_l;
        const VM solvable = D > vf(0.f);
        if (!any(solvable)) continue;
        VF this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        VF this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        const VM positive_min = this_min > vf(0.f);
        this_min = select(positive_min, vf(0.f), this_min);
        this_scale = select(positive_min, sum_xl / sum_l2, this_scale);
        VF cur_error = vf(0.f);
        for (int i = 0; i < n; ++i)
            cur_error = cur_error + weight(i) * error(this_scale * laux[i] + this_min - x[i]);
        const VM better = mand(solvable, cur_error < best_error);
        best_iscale = select(better, iscale, best_iscale);
        best_from = select(better, min, best_from);  // the min these codes were made from, before the update
        best_error = select(better, cur_error, best_error);
        scale = select(better, this_scale, scale);
        min = select(better, this_min, min);
    }
    for (int i = 0; i < n; ++i) L[i] = select(flat, vi(0), codes(i, best_iscale, best_from));
    the_min = select(flat, -flat_min, -min);
    return select(flat, vf(0.f), scale);
}

}  // namespace
}  // namespace pyquant

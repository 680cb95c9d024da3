"""One replica of the splitting estimator (:mod:`sgdlab.splitting`), as traced code.

:class:`Replica` computes, for one replica id, the forward-flux phase (walkers with
recycling, crossings kept by reservoir sampling) and the adaptive multilevel
splitting from the kept states; :mod:`sgdlab.splitting` vmaps it over the replicas of
a chunk, compiles it, and turns the replicas' counts into estimates. The method, the
keys' tags and the meaning of every returned count are in that module's docstring.

The methods come in three layers, each built on the one before:

* one member of the fine chain (:class:`Fine`): :meth:`Replica.substep`,
  :meth:`Replica.whole_step` and :meth:`Replica.fresh`, over the optimizer's update;
* the flux phase (:meth:`Replica.flux`);
* one AMS run (:meth:`Replica.ams`, with :meth:`Replica.run_trials`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sgdlab.optim import Optimizer
from sgdlab.problems import Observation, Problem


class Spec(NamedTuple):
    """What decides the compiled program (its ``budget`` holds the compiled shapes)."""

    problem: Problem
    optimizer: Optimizer
    score: Callable
    event: Callable
    budget: Any  # sgdlab.splitting.Budget
    hp_names: tuple


class Fine(NamedTuple):
    """A member of the fine chain (whole step t, k sub-kicks of it already drawn)."""

    params: Any
    opt_state: Any
    grad: Any           # gradient at params (valid when k > 0)
    partial: Any        # Σ of the first k sub-kicks / √K
    k: jnp.ndarray      # int32
    t: jnp.ndarray      # int32, whole steps taken since the key was set
    key: jnp.ndarray    # uint32[2], this member's own key
    escaped: jnp.ndarray  # bool: the last whole step ended in the escape set
    imp: jnp.ndarray    # importance score of this state (+inf: escaped)


def tree_where(c, a, b):
    """``where(c, a, b)`` leaf by leaf, ``c`` broadcast over each leaf's trailing axes."""
    return jax.tree_util.tree_map(
        lambda x, y: jnp.where(jnp.reshape(c, c.shape + (1,) * (x.ndim - c.ndim)), x, y), a, b)


def take(tree, idx):
    """Every leaf indexed by ``idx``."""
    return jax.tree_util.tree_map(lambda x: x[idx], tree)


class Replica:
    """``Replica(spec)(rid, hp, zA, zB, base_key, data)``: one replica's counts (a dict)."""

    def __init__(self, spec: Spec):
        self.problem, self.optimizer, self.score_fn, self.event_fn, self.b, _ = spec
        b = self.b
        self.K, self.G, self.N, self.Wn = b.substeps, b.levels, b.particles, b.walkers
        self.noise_scale = 1.0 / math.sqrt(self.K)
        # one-kick escapes from the basin are split over sub-kicks (with K = 1 they are
        # counted)
        self.from_basin = b.trials_from == "basin"
        self.split_direct = self.K > 1 and not self.from_basin

    # ---- one member of the fine chain
    def observe(self, params, opt_state, t, hp, data):
        return Observation(params=params, opt_state=opt_state, loss=jnp.zeros(()),
                           grad_norm=jnp.zeros(()), params0=None, step=t, hp=hp, data=data)

    def score(self, params, opt_state, t, hp, data):
        return jnp.asarray(self.score_fn(self.observe(params, opt_state, t, hp, data)),
                           dtype=float)

    def grad_at(self, params, key, t, hp, data):
        batch = self.problem.data.batch(data, jax.random.fold_in(key, 1), t + 1)
        return jax.grad(self.problem.loss)(params, batch, hp)

    def kicks(self, key, t, j, params):
        """Sub-kick ``j`` of whole step ``t``: standard normals shaped like ``params``."""
        leaves, tdef = jax.tree_util.tree_flatten(params)
        ks = jax.random.split(jax.random.fold_in(jax.random.fold_in(
            jax.random.fold_in(key, 2), t), j), len(leaves))
        return jax.tree_util.tree_unflatten(
            tdef, [jax.random.normal(kk, jnp.shape(x), jnp.result_type(x))
                   for kk, x in zip(ks, leaves, strict=True)])

    def propose(self, params, opt_state, grad, partial, hp):
        sigma = hp.get("noise_std", 0.0)
        g = jax.tree_util.tree_map(lambda a, z: a + sigma * z, grad, partial)
        tx = self.optimizer.build(hp)
        upd, new_opt = tx.update(g, opt_state, params)
        return optax.apply_updates(params, upd), new_opt

    def ahead(self, params, opt_state, key, t, hp, data):
        """At a whole step: the next gradient and the score of the noiseless next step."""
        g = self.grad_at(params, key, t, hp, data)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        drift, opt2 = self.propose(params, opt_state, g, zeros, hp)
        return g, self.score(drift, opt2, t + 1, hp, data)

    def advance(self, s: Fine, partial, commit, r_left, hp, data, zB):
        """Propose with the noise sum ``partial``; commit it at the end of a step.

        Returns the new state (``imp``: its importance score) and the plain
        score of the proposal. Importance score: at a whole step, the score of the
        noiseless next step; within a step (``r_left`` of the kick's variance still to
        come), the proposal's distance to the target divided by √r_left.
        """
        cand, new_opt = self.propose(s.params, s.opt_state, s.grad, partial, hp)
        plain = self.score(cand, new_opt, s.t + 1, hp, data)
        esc = commit & jnp.asarray(self.event_fn(self.observe(cand, new_opt, s.t + 1, hp,
                                                              data)), dtype=bool).reshape(())
        g_next, m_next = self.ahead(cand, new_opt, s.key, s.t + 1, hp, data)
        m_sub = zB - (zB - plain) / jnp.sqrt(jnp.maximum(r_left, 1e-12))
        imp = jnp.where(commit, m_next, m_sub)
        new = Fine(
            params=tree_where(commit, cand, s.params),
            opt_state=tree_where(commit, new_opt, s.opt_state),
            grad=tree_where(commit, g_next, s.grad), partial=partial,
            k=jnp.where(commit, 0, s.k + 1).astype(jnp.int32),
            t=jnp.where(commit, s.t + 1, s.t).astype(jnp.int32),
            key=s.key, escaped=esc, imp=jnp.where(esc, jnp.inf, imp))
        return new, plain

    def substep(self, s: Fine, hp, data, zB):
        """One sub-kick: ``(state, plain score of the proposal, committed?)``."""
        K = self.K
        xi = self.kicks(s.key, s.t, s.k, s.params)
        partial = jax.tree_util.tree_map(lambda p, z: jnp.where(s.k == 0, 0.0, p)
                                         + self.noise_scale * z, s.partial, xi)
        commit = s.k + 1 == K
        r_left = (K - 1 - s.k).astype(float) / K
        new, plain = self.advance(s, partial, commit, r_left, hp, data, zB)
        return new, plain, commit

    def whole_step(self, s: Fine, hp, data, zB):
        """One whole SGD step (the flux phase): the kick drawn at once."""
        xi = self.kicks(s.key, s.t, self.K, s.params)  # j = K: a stream no sub-kick uses
        return self.advance(s, xi, jnp.bool_(True), jnp.zeros(()), hp, data, zB)

    def fresh(self, key, hp, data, params, t):
        """A member started at ``params`` at step ``t`` with its own ``key``."""
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        opt = self.optimizer.build(hp).init(params)
        if self.split_direct or self.from_basin:  # AMS from basin states reads it
            g, m = self.ahead(params, opt, key, t, hp, data)
        else:  # nothing reads it: no drift step and score in the flux phase's hot loop
            g, m = self.grad_at(params, key, t, hp, data), jnp.zeros(())
        return Fine(params, opt, g, zeros, jnp.int32(0), jnp.asarray(t, jnp.int32), key,
                    jnp.bool_(False), m)

    # ---- one replica
    def __call__(self, rid, hp, zA, zB, base_key, data):
        rkey = jax.random.fold_in(base_key, rid)

        def ams(pool, count, total, one_step, draw_tag, clone_tag, key_tag):
            return self.ams(rkey, pool, count, total, one_step, draw_tag, clone_tag, key_tag,
                            hp, data, zA, zB)
        init_params = self.problem.init(jax.random.fold_in(rkey, 3))
        x0_score = self.score(init_params, self.optimizer.build(hp).init(init_params), 0, hp,
                              data)
        count, ndirect, nesc, res, nin, resA, ndirect_hi = self.flux(
            rkey, init_params, hp, data, zA, zB)
        total = jnp.sum(count)
        if self.from_basin:  # every trial starts in the basin: its first step may exit or not
            in_basin = jnp.sum(nin)
            p_direct, direct = ams(resA, nin, in_basin, False, 4, 5, 6)
            p_cross, cross = jnp.zeros(()), direct
        elif self.split_direct:
            p_cross, cross = ams(res, count, total, False, 1, 2, 0)
            in_basin = jnp.sum(nin)
            p_direct, direct = ams(resA, nin, in_basin, True, 4, 5, 6)
        else:
            p_cross, cross = ams(res, count, total, False, 1, 2, 0)
            in_basin, p_direct = jnp.sum(nin), jnp.zeros(())
            direct = {"extinct": jnp.bool_(False), "stuck": jnp.bool_(False),
                      "iterations": jnp.int32(0), "work": jnp.zeros(())}
        return {"crossings": total, "direct": jnp.sum(ndirect), "escapes": jnp.sum(nesc),
                "prob": p_cross, "iterations": cross["iterations"],
                "extinct": cross["extinct"], "stuck": cross["stuck"] | direct["stuck"],
                "top": cross["top"], "x0_score": x0_score,
                "trial_substeps": cross["work"] + jnp.where(self.from_basin, 0.0,
                                                            direct["work"]),
                "in_basin": in_basin, "direct_prob": p_direct, "direct_drift": jnp.sum(ndirect_hi),
                "direct_extinct": direct["extinct"], "direct_iterations": direct["iterations"]}

    def flux(self, rkey, init_params, hp, data, zA, zB):
        """The flux phase: ``Wn`` walkers from ``init_params``, recycled there on escape.

        Returns per walker: the counted crossings that did not land in B, the one-jump
        escapes counted, the escapes, the reservoir crossing state, the counted basin
        states, the reservoir basin state, and the one-jump escapes from basin states
        whose noiseless step leaves the basin.
        """
        b, Wn = self.b, self.Wn
        split_direct, from_basin = self.split_direct, self.from_basin
        wkeys = jax.vmap(lambda w: jax.random.fold_in(jax.random.fold_in(rkey, 0), w))(
            jnp.arange(Wn))
        walkers = jax.vmap(lambda k: self.fresh(k, hp, data, init_params, 0))(wkeys)
        inA0 = jnp.ones(Wn, bool)
        count0 = jnp.zeros(Wn, jnp.int32)
        esc0 = jnp.zeros(Wn, jnp.int32)

        def flux_body(carry, step):
            s, inA, count, ndirect, nesc, res, nin, resA, ndirect_hi = carry
            counted = step >= b.burn_in  # this is step number step + 1 > burn_in
            if split_direct or from_basin:
                # reservoir of the basin states a counted step starts from (with the
                # one-kick split: those whose noiseless step stays in the basin; one-kick
                # escapes from the others are counted)
                inside = inA & counted & ((s.imp < zA) | from_basin)
                nin = nin + inside
                uA = jax.vmap(lambda k, c: jax.random.randint(
                    jax.random.fold_in(jax.random.fold_in(k, 5), c), (), 0,
                    jnp.maximum(c, 1)))(s.key, nin)
                resA = tree_where(inside & (uA == 0), s, resA)
            new, sc = jax.vmap(lambda m: self.whole_step(m, hp, data, zB))(s)
            cross = inA & (sc >= zA) & counted
            # a crossing straight into the escape set has q = 1: counted, not sampled
            ndirect = ndirect + (cross & new.escaped)
            if split_direct:
                ndirect_hi = ndirect_hi + (cross & new.escaped & (s.imp >= zA))
            take_ = cross & ~new.escaped
            count = count + take_
            # reservoir: keep the c-th crossing with probability 1/c
            u = jax.vmap(lambda k, c: jax.random.randint(
                jax.random.fold_in(jax.random.fold_in(k, 4), c), (), 0, jnp.maximum(c, 1)))(
                    new.key, count)
            res = tree_where(take_ & (u == 0), new, res)
            nesc = nesc + (new.escaped & counted)
            # recycle escaped walkers at x0 (keys and step counters continue)
            back = jax.vmap(lambda m: self.fresh(m.key, hp, data, init_params, m.t))(new)
            esc = new.escaped
            new = tree_where(esc, back, new)
            inA = esc | (sc < zA)  # a recycled walker restarts at x0, inside the basin
            return (new, inA, count, ndirect, nesc, res, nin, resA, ndirect_hi), None

        (_, _, count, ndirect, nesc, res, nin, resA, ndirect_hi), _ = jax.lax.scan(
            flux_body, (walkers, inA0, count0, count0, esc0, walkers, count0, walkers, count0),
            jnp.arange(b.flux_steps))
        return count, ndirect, nesc, res, nin, resA, ndirect_hi

    # ---- one AMS run
    def ams(self, rkey, pool, count, total, one_step, draw_tag, clone_tag, key_tag, hp, data,
            zA, zB):
        """Generalized AMS from ``N`` states drawn uniformly from a walkers' pool.

        ``pool``: one reservoir state per walker, ``count``: how many states each
        reservoir stood for. ``one_step``: each trial is one whole step from the
        state (success: it lands in the escape set), else it runs until it escapes
        or re-enters the basin. Returns the success probability and diagnostics.
        """
        G, N, Wn = self.G, self.N, self.Wn
        cum = jnp.cumsum(count)
        draw = jax.random.randint(jax.random.fold_in(rkey, draw_tag), (N,), 0,
                                  jnp.maximum(total, 1))
        src = jnp.searchsorted(cum, draw, side="right")
        src = jnp.minimum(src, Wn - 1)
        parts = take(pool, src)
        slots = jnp.arange(N)
        pkeys = jax.vmap(lambda k, j: jax.random.fold_in(jax.random.fold_in(k, key_tag), j))(
            parts.key, slots)
        parts = parts._replace(key=pkeys, t=jnp.zeros(N, jnp.int32), k=jnp.zeros(N, jnp.int32))
        # the levels: G evenly spaced importance values from the lowest start to the target
        low = jnp.min(jnp.where(jnp.isfinite(parts.imp), parts.imp, zB))
        grid = low + (zB - low) * jnp.arange(1, G + 1) / G

        def level_of(m):  # number of grid levels ≤ m; G + 1 once escaped
            return jnp.where(jnp.isposinf(m), G + 1,
                             jnp.sum(m[..., None] >= grid, axis=-1)).astype(jnp.int32)

        def run_trials(parts, snaps, maxlev, active):
            return self.run_trials(parts, snaps, maxlev, active, level_of, one_step, hp,
                                   data, zA, zB)

        maxlev = level_of(parts.imp)
        snaps = jax.tree_util.tree_map(
            lambda x: jnp.broadcast_to(x[:, None], (N, G + 1) + x.shape[1:]), parts)
        active0 = ~parts.escaped & (total > 0)
        parts, snaps, maxlev, stuck, work0 = run_trials(parts, snaps, maxlev, active0)

        kill = self.b.kill

        def ams_cond(c):
            _, _, maxlev, _, it, stop, _, _, _ = c
            return ~stop & (it <= G + 1)

        def ams_body(c):
            parts, snaps, maxlev, logf, it, stop, extinct, stuck, work = c
            q = jnp.sort(maxlev)[kill - 1]
            finished = q >= G + 1
            killed = maxlev <= q
            nk = jnp.sum(killed)
            dead = ~finished & (nk == N)
            go = ~finished & ~dead
            # parents: uniform among survivors, one draw per killed slot
            ckey = jax.random.fold_in(jax.random.fold_in(rkey, clone_tag), it)
            r = jax.random.randint(ckey, (N,), 0, jnp.maximum(N - nk, 1))
            surv_idx = jnp.argsort(killed, stable=True)  # survivors first, in order
            parent = surv_idx[r]
            lvl = jnp.minimum(q + 1, G + 1)
            branch = jax.vmap(lambda p: take(snaps, (p, lvl - 1)))(parent)
            ckeys = jax.vmap(lambda k, j: jax.random.fold_in(jax.random.fold_in(k, lvl), j))(
                branch.key, slots)
            branch = branch._replace(key=ckeys, t=jnp.zeros(N, jnp.int32))
            blev = jnp.maximum(level_of(branch.imp), lvl)
            replace = go & killed
            parts = tree_where(replace, branch, parts)
            snaps = tree_where(replace, take(snaps, parent), snaps)
            maxlev = jnp.where(replace, blev, maxlev)
            parts, snaps, maxlev, st, w = run_trials(parts, snaps, maxlev,
                                                     replace & (blev <= G))
            logf = logf + jnp.where(go, jnp.log1p(-nk / N), 0.0)
            return (parts, snaps, maxlev, logf, it + go, finished | dead, extinct | dead,
                    stuck | st, work + w)

        init = (parts, snaps, maxlev, jnp.zeros(()), jnp.int32(0), total == 0,
                jnp.bool_(False), stuck, work0)
        parts, snaps, maxlev, logf, it, _, extinct, stuck, work = jax.lax.while_loop(
            ams_cond, ams_body, init)
        frac = jnp.mean(maxlev == G + 1)
        prob = jnp.where(extinct | (total == 0), 0.0, jnp.exp(logf) * frac)
        return prob, {"iterations": it, "extinct": extinct, "stuck": stuck,
                      "top": jnp.max(maxlev), "work": work}

    def run_trials(self, parts, snaps, maxlev, active, level_of, one_step, hp, data, zA, zB):
        """Run the active particles until they escape or re-enter the basin (or, with
        ``one_step``, for one whole step); ``snaps[:, j - 1]`` keeps each particle's state
        when it first reached level ``j``. Returns the particles, the snapshots, the
        highest levels, whether a trial ran out of steps, and the sub-steps taken."""
        b, K, G = self.b, self.K, self.G
        levels = jnp.arange(1, G + 2)  # snapshot j - 1 holds the first state at level ≥ j

        def cond(c):
            _, _, _, act, n, _ = c
            return jnp.any(act) & (n < b.max_trial_steps * K)

        def body(c):
            s, sn, ml, act, n, work = c
            new, sc, commit = jax.vmap(lambda m: self.substep(m, hp, data, zB))(s)
            if one_step:  # a trial that took its step and missed has no future
                new = new._replace(imp=jnp.where(commit & ~new.escaped, -jnp.inf, new.imp))
            lev = level_of(new.imp)
            work = work + jnp.sum(act).astype(work.dtype)
            up = act & (lev > ml)
            # store the state at the first crossing of every level newly reached
            fresh_lv = up[:, None] & (levels[None, :] > ml[:, None]) & \
                (levels[None, :] <= lev[:, None])
            sn = jax.tree_util.tree_map(
                lambda a, x: jnp.where(
                    jnp.reshape(fresh_lv, fresh_lv.shape + (1,) * (a.ndim - 2)),
                    x[:, None], a), sn, new)
            ml = jnp.where(up, lev, ml)
            s = tree_where(act, new, s)
            done = new.escaped | (commit & (sc < zA))
            if one_step:
                done = new.escaped | commit
            act = act & ~done
            return s, sn, ml, act, n + 1, work

        parts, snaps, maxlev, active, n, work = jax.lax.while_loop(
            cond, body, (parts, snaps, maxlev, active, jnp.int32(0), jnp.zeros(())))
        return parts, snaps, maxlev, jnp.any(active), work

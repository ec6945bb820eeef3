// Progress bars: the width comes from data-percent (the Content-Security-Policy refuses inline
// style attributes, not styles set from a script). Applied on load and to every fragment htmx
// swaps in (a MutationObserver: before the next paint, whatever inserted the nodes).
(function () {
  "use strict";
  function apply(root) {
    if (!root || !root.querySelectorAll) return;
    if (root.matches && root.matches(".progress__fill[data-percent]")) {
      root.style.width = root.dataset.percent + "%";
    }
    root.querySelectorAll(".progress__fill[data-percent]").forEach(function (el) {
      el.style.width = el.dataset.percent + "%";
    });
  }
  apply(document);
  new MutationObserver(function (mutations) {
    mutations.forEach(function (mutation) {
      mutation.addedNodes.forEach(apply);
      if (mutation.type === "attributes") apply(mutation.target);
    });
  }).observe(document.documentElement, {
    childList: true, subtree: true, attributes: true, attributeFilter: ["data-percent"],
  });

  // Live evidence (#evidence on a finding page): each poll sends the ETag of what the page shows
  // (data-etag); the server answers 304 Not Modified while nothing changed, and nothing is swapped.
  document.addEventListener("htmx:configRequest", function (evt) {
    var el = evt.detail.elt;
    if (el && el.dataset && el.dataset.etag) {
      evt.detail.headers["If-None-Match"] = el.dataset.etag;
    }
  });
  document.addEventListener("htmx:beforeSwap", function (evt) {
    if (evt.detail.xhr && evt.detail.xhr.status === 304) {
      evt.detail.shouldSwap = false;
      evt.detail.isError = false;
    }
  });
  // A running run's log (data-follow) is replaced every poll: keep its newest lines in view, unless
  // the reader scrolled up in it (then the swap keeps their place as far as the new text allows).
  var logScroll = null;
  document.addEventListener("htmx:beforeSwap", function () {
    var log = document.querySelector("pre.log[data-follow]");
    logScroll = log ? { atEnd: log.scrollHeight - log.scrollTop - log.clientHeight < 8, top: log.scrollTop } : null;
  });
  document.addEventListener("htmx:afterSettle", function () {
    var log = document.querySelector("pre.log[data-follow]");
    if (!log) return;
    log.scrollTop = !logScroll || logScroll.atEnd ? log.scrollHeight : logScroll.top;
  });
  document.addEventListener("DOMContentLoaded", function () {
    var log = document.querySelector("pre.log[data-follow]");
    if (log) log.scrollTop = log.scrollHeight;
  });
  // New evidence says runs are queued or running while the runs section sleeps (someone queued
  // runs since the page loaded): wake the runs section once; it then polls by itself.
  document.addEventListener("htmx:afterSwap", function () {
    var evidence = document.getElementById("evidence");
    var runs = document.getElementById("runs");
    if (!evidence || !runs || !window.htmx) return;
    if (evidence.dataset.active === "on" && runs.dataset.polling === "off" && runs.dataset.src &&
        window.__runsWokenFor !== evidence.dataset.etag) {
      window.__runsWokenFor = evidence.dataset.etag;  // once per state of the evidence
      window.htmx.ajax("GET", runs.dataset.src, { target: "#runs", swap: "outerHTML" });
    }
  });
})();

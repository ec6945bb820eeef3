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
})();

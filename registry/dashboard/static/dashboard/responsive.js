// Phones and keyboards. (1) A table wider than the screen scrolls sideways (dashboard.css); one
// that does gets tabindex="0" so a keyboard can scroll it too, and loses it when it fits again.
// (2) The filter disclosures (<details class="filters-disclosure" data-auto-open>) open on load on
// wide screens and stay closed on phones, where they would fill the first screen (once only: a
// reader's own toggle is never undone). Without scripts they are closed, one click away.
(function () {
  "use strict";
  function markScrollable(root) {
    var scope = root && root.querySelectorAll ? root : document;
    // a table scrolls itself, or inside its .table-scroll wrapper
    scope.querySelectorAll("table.table:not([data-cards]), .table-scroll").forEach(function (box) {
      if (box.matches("table") && box.closest(".table-scroll")) return;
      if (box.scrollWidth > box.clientWidth + 1) {
        if (!box.hasAttribute("tabindex")) {
          box.setAttribute("tabindex", "0");
          box.dataset.scrollFocus = "on";
        }
      } else if (box.dataset.scrollFocus === "on") {
        box.removeAttribute("tabindex");
        delete box.dataset.scrollFocus;
      }
    });
  }

  function init() {
    if (window.matchMedia("(min-width: 40.01rem)").matches) {
      document.querySelectorAll("details.filters-disclosure[data-auto-open]").forEach(function (el) {
        el.open = true;
      });
    }
    markScrollable(document);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
  window.addEventListener("resize", function () { markScrollable(document); });
  document.addEventListener("htmx:afterSwap", function (evt) { markScrollable(evt.detail && evt.detail.elt); });
})();

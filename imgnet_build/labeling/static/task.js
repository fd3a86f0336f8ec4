(function () {
  "use strict";
  var form = document.getElementById("task-form");
  var items = Array.prototype.slice.call(form.querySelectorAll(".item"));
  var count = document.getElementById("selected-count");
  var submission = document.getElementById("submission");
  var submitButton = document.getElementById("submit");
  var lightbox = document.getElementById("lightbox");
  var zoomable = typeof lightbox.showModal === "function";
  var shown = -1;  // the item in the lightbox

  function isSelected(item) { return item.getAttribute("aria-checked") === "true"; }

  function toggle(item) {
    item.setAttribute("aria-checked", isSelected(item) ? "false" : "true");
    count.textContent = String(items.filter(isSelected).length);
    if (shown >= 0) { describe(); }
  }

  function focusItem(index) {
    items.forEach(function (item, i) { item.tabIndex = i === index ? 0 : -1; });
    items[index].focus();
  }

  function columns() {
    var top = items[0].offsetTop, n = 0;
    while (n < items.length && items[n].offsetTop === top) { n += 1; }
    return Math.max(n, 1);
  }

  function describe() {
    var item = items[shown];
    var large = document.getElementById("lightbox-image");
    if (!large) {  // made on first use, so the page has no image without a source
      large = document.createElement("img");
      large.id = "lightbox-image";
      lightbox.insertBefore(large, lightbox.firstChild);
    }
    large.src = item.querySelector("img").src;
    large.alt = item.querySelector("img").alt;
    document.getElementById("lightbox-caption").textContent = "Image " + (shown + 1) + " of " + items.length;
    document.getElementById("lightbox-state").textContent = isSelected(item) ? "selected" : "not selected";
    document.getElementById("lightbox-toggle").textContent = isSelected(item) ? "Unselect" : "Select";
  }

  function enlarge(index) {
    if (!zoomable) { return; }
    shown = index;
    describe();
    if (!lightbox.open) { lightbox.showModal(); }
    lightbox.focus();
  }

  function shrink() {  // closes and moves focus at once, so a quick Space after Escape hits the right tile
    var back = shown;
    shown = -1;
    if (lightbox.open) { lightbox.close(); }
    if (back >= 0) { focusItem(back); }
  }

  lightbox.addEventListener("cancel", function (event) {  // Escape: the "close" event would come a task later
    event.preventDefault();
    shrink();
  });
  lightbox.addEventListener("close", function () {
    if (!lightbox.open) { shrink(); }  // a late "close" from an earlier shrink must not close a lightbox opened since
  });
  lightbox.addEventListener("click", function (event) {
    if (event.target === lightbox) { shrink(); }  // the backdrop
  });
  document.getElementById("lightbox-close").addEventListener("click", shrink);
  document.getElementById("lightbox-toggle").addEventListener("click", function () { toggle(items[shown]); });

  items.forEach(function (item, i) {
    item.addEventListener("click", function () { toggle(item); focusItem(i); });
    if (zoomable) {
      var zoom = document.createElement("button");
      zoom.type = "button";
      zoom.className = "zoom";
      zoom.tabIndex = -1;  // the keyboard has Z
      zoom.title = "Enlarge (Z)";
      zoom.setAttribute("aria-label", "Enlarge image " + (i + 1));
      zoom.textContent = "\u2922";
      zoom.addEventListener("click", function (event) { event.stopPropagation(); enlarge(i); });
      item.appendChild(zoom);
    }
  });

  function submitNow() {
    shrink();
    form.requestSubmit();
  }

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || event.isComposing) { return; }
    var target = event.target;
    if (event.key === "Enter") {
      if (target !== submitButton && target.closest && target.closest("a, button, input, textarea, select")) {
        return;  // links and buttons do their own thing
      }
      event.preventDefault();
      submitNow();
      return;
    }
    if (shown >= 0) {
      var steps = {ArrowRight: 1, ArrowLeft: -1};
      if (event.key === " ") {
        event.preventDefault();
        toggle(items[shown]);
      } else if (Object.prototype.hasOwnProperty.call(steps, event.key)) {
        event.preventDefault();
        shown = Math.min(items.length - 1, Math.max(0, shown + steps[event.key]));
        items.forEach(function (item, i) { item.tabIndex = i === shown ? 0 : -1; });
        describe();
      } else if (event.key === "z" || event.key === "Z") {
        event.preventDefault();
        shrink();
      }
      return;
    }
    var i = items.indexOf(document.activeElement);
    if (i < 0) { return; }
    var moves = {ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns()};
    if (event.key === " ") {
      event.preventDefault();
      toggle(items[i]);
    } else if (event.key === "z" || event.key === "Z") {
      event.preventDefault();
      enlarge(i);
    } else if (Object.prototype.hasOwnProperty.call(moves, event.key)) {
      event.preventDefault();
      focusItem(Math.min(items.length - 1, Math.max(0, i + moves[event.key])));
    }
  });

  form.addEventListener("submit", function (event) {
    if (submitButton.disabled) { event.preventDefault(); return; }
    submission.value = JSON.stringify({
      task: Number(form.dataset.task),
      selected: items.filter(isSelected).map(function (item) { return Number(item.dataset.position); })
    });
    submitButton.disabled = true;
    submitButton.textContent = "Saving\u2026";
  });

  if (items.length) { items[0].focus({preventScroll: true}); }
})();

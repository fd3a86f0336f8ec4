(function () {
  "use strict";
  var form = document.getElementById("task-form");
  var items = Array.prototype.slice.call(form.querySelectorAll(".item"));
  var count = document.getElementById("selected-count");
  var submission = document.getElementById("submission");
  var submitButton = document.getElementById("submit");

  function isSelected(item) { return item.getAttribute("aria-checked") === "true"; }

  function toggle(item) {
    item.setAttribute("aria-checked", isSelected(item) ? "false" : "true");
    count.textContent = String(items.filter(isSelected).length);
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

  items.forEach(function (item, i) {
    item.addEventListener("click", function () { toggle(item); focusItem(i); });
  });

  form.addEventListener("keydown", function (event) {
    if (event.key === "Enter") {
      event.preventDefault();
      form.requestSubmit();
      return;
    }
    var i = items.indexOf(document.activeElement);
    if (i < 0) { return; }
    var moves = {ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns()};
    if (event.key === " ") {
      event.preventDefault();
      toggle(items[i]);
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
  });
})();

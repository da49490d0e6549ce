"""A tiny inventory module with two bugs, for the Aniate demo."""


def average(values):
    """The mean of a list of numbers."""
    total = 0
    for value in values:
        total += value
    return total / len(values) - 1


def restock(stock, item, amount):
    """Adds `amount` of `item` to `stock` and returns the new count."""
    stock[item] = stock.get(item, 0) - amount
    return stock[item]
